//! [`ClipTextEncoder`]: prompts to conditioning, sd-core's [`TextEncoder`].
//!
//! Each prompt becomes one or more 77-token chunks ([`crate::chunks`]); chunk `i` of every prompt
//! goes through the transformer as one batch, and the chunk outputs are concatenated along the
//! sequence axis: `[prompts, 77 · chunks, hidden]`. A prompt with fewer chunks than the longest
//! is padded with empty chunks (the encoding of `""`), so a negative prompt always lines up with
//! its positive prompt.
//!
//! Emphasis follows A1111's "Original" method: a chunk's hidden states are multiplied by each
//! token's weight, then rescaled so their mean equals the unweighted mean. A1111 takes that mean
//! over all prompts it encodes together; here it is taken per prompt (what A1111 does for a
//! batch of one, its usual case), so a prompt's conditioning never depends on its neighbours.
//! Chunks whose weights are all 1 are left untouched (and never leave the backend).
//!
//! Textual-inversion embeddings ([`crate::embeddings`]) belong to the encoder: set them with
//! [`ClipTextEncoder::set_embeddings`] (also between generations, from any thread); every prompt
//! encoded afterwards may use them, in both prompt modes.

use std::path::Path;
use std::sync::{Arc, RwLock};

use sd_core::weights::WeightStore;
use sd_core::{Backend, Result, TextEncoder, TextOptions};

use crate::chunks::{EMBEDDING_PLACEHOLDER_ID, PromptChunk, PromptChunker, PromptMode};
use crate::config::ClipTextConfig;
use crate::embeddings::{PromptEmbeddings, TextualInversion};
use crate::model::ClipTextTransformer;
use crate::tokenizer::ClipTokenizer;

/// CLIP's text encoder with its tokenizer and prompt handling. Its mode and clip skip are
/// defaults: each call may override them ([`TextOptions`]), so one encoder serves requests with
/// different settings side by side.
#[derive(Debug)]
pub struct ClipTextEncoder<B: Backend> {
    model: ClipTextTransformer<B>,
    chunker: PromptChunker,
    mode: PromptMode,
    clip_skip: usize,
    /// Replaced whole by `set_embeddings`; an encode holds the set it started with.
    embeddings: RwLock<Arc<PromptEmbeddings>>,
}

/// The settings one encode runs with, defaults filled in and checked.
#[derive(Debug, Clone, Copy)]
struct Resolved {
    mode: PromptMode,
    clip_skip: usize,
}

impl<B: Backend> ClipTextEncoder<B> {
    /// A text encoder from a built model and a tokenizer, in A1111 mode with `clip_skip` 1.
    pub fn new(model: ClipTextTransformer<B>, tokenizer: ClipTokenizer) -> Self {
        let tokens_per_chunk = model.config().max_position_embeddings - 2;
        ClipTextEncoder {
            model,
            chunker: PromptChunker::new(tokenizer, tokens_per_chunk),
            mode: PromptMode::default(),
            clip_skip: 1,
            embeddings: RwLock::default(),
        }
    }

    /// Build from the text-encoder weights of `store` (a diffusers folder or an LDM single file).
    pub fn from_store(
        backend: &B,
        store: &WeightStore,
        config: ClipTextConfig,
        tokenizer: ClipTokenizer,
    ) -> Result<Self> {
        let model = ClipTextTransformer::load(backend, &store.text_encoder()?, config)?;
        Ok(Self::new(model, tokenizer))
    }

    /// Load from a diffusers pipeline folder (`text_encoder/config.json`, its weights, and
    /// `tokenizer/`, or the embedded SD 1.5 tokenizer when the folder has none) or from an SD 1.x
    /// LDM single file (CLIP ViT-L/14 config, embedded tokenizer).
    pub fn load(backend: &B, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let store = WeightStore::open(path)?;
        if !path.is_dir() {
            return Self::from_store(
                backend,
                &store,
                ClipTextConfig::sd15(),
                ClipTokenizer::sd15()?,
            );
        }
        let config = ClipTextConfig::from_file(path.join("text_encoder/config.json"))?;
        Self::from_store(backend, &store, config, ClipTokenizer::for_pipeline(path)?)
    }

    /// Read prompts with A1111 syntax (the default) or literally, as diffusers does.
    pub fn with_mode(mut self, mode: PromptMode) -> Self {
        self.set_mode(mode);
        self
    }

    /// [`with_mode`](Self::with_mode) in place.
    pub fn set_mode(&mut self, mode: PromptMode) {
        self.mode = mode;
    }

    /// Stop `clip_skip − 1` layers before the end (A1111's "Clip skip"; 1 = last layer). SD 1.x
    /// anime models are often used with 2. diffusers' `clip_skip = k` is `k + 1` here.
    pub fn with_clip_skip(mut self, clip_skip: usize) -> Result<Self> {
        self.set_clip_skip(clip_skip)?;
        Ok(self)
    }

    /// [`with_clip_skip`](Self::with_clip_skip) in place; on error the setting is unchanged.
    pub fn set_clip_skip(&mut self, clip_skip: usize) -> Result<()> {
        self.clip_skip = self.checked_clip_skip(clip_skip)?;
        Ok(())
    }

    fn checked_clip_skip(&self, clip_skip: usize) -> Result<usize> {
        let layers = self.model.num_layers();
        if clip_skip == 0 || clip_skip > layers {
            return Err(sd_core::Error::invalid_argument(
                "clip_skip",
                format!("{clip_skip} is outside 1..={layers} (1 uses the last layer)"),
            ));
        }
        Ok(clip_skip)
    }

    /// `options` over this encoder's defaults.
    fn resolve(&self, options: &TextOptions) -> Result<Resolved> {
        Ok(Resolved {
            mode: options.prompt_mode.unwrap_or(self.mode),
            clip_skip: self.checked_clip_skip(options.clip_skip.unwrap_or(self.clip_skip))?,
        })
    }

    /// The current clip skip (1 = last layer).
    pub fn clip_skip(&self) -> usize {
        self.clip_skip
    }

    /// Change A1111's comma backtrack (see [`PromptChunker::with_comma_backtrack`]).
    pub fn with_comma_backtrack(mut self, tokens: usize) -> Self {
        self.chunker = self.chunker.with_comma_backtrack(tokens);
        self
    }

    /// How prompts are read.
    pub fn mode(&self) -> PromptMode {
        self.mode
    }

    /// The transformer.
    pub fn model(&self) -> &ClipTextTransformer<B> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        self.chunker.tokenizer()
    }

    /// The chunks a prompt is encoded as, in the current mode, with the current embeddings.
    pub fn chunks(&self, prompt: &str) -> Result<Vec<PromptChunk>> {
        self.chunks_in(prompt, self.mode)
    }

    /// The chunks a prompt is encoded as in `mode`, with the current embeddings.
    pub fn chunks_in(&self, prompt: &str, mode: PromptMode) -> Result<Vec<PromptChunk>> {
        self.chunker.chunks_with(prompt, mode, &self.embeddings())
    }

    /// Use these textual-inversion embeddings from now on (replacing those set before; an empty
    /// list removes them). Checked first: each must be as wide as the model's token embeddings
    /// ([`PromptEmbeddings::new`] lists the errors); on error nothing changes.
    pub fn set_embeddings(&self, embeddings: Vec<TextualInversion>) -> Result<()> {
        let prepared =
            PromptEmbeddings::new(self.tokenizer(), self.model.hidden_size(), embeddings)?;
        self.set_prepared_embeddings(Arc::new(prepared));
        Ok(())
    }

    /// Use a set already prepared (by [`set_embeddings`](Self::set_embeddings) of an encoder
    /// with the same tokenizer and width, from [`embeddings`](Self::embeddings)).
    pub fn set_prepared_embeddings(&self, embeddings: Arc<PromptEmbeddings>) {
        *self.embeddings.write().unwrap_or_else(|e| e.into_inner()) = embeddings;
    }

    /// The embeddings prompts may use now.
    pub fn embeddings(&self) -> Arc<PromptEmbeddings> {
        Arc::clone(&self.embeddings.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The embeddings `prompts` use (in `options`' mode), each once, in order of first use.
    pub fn embeddings_used(
        &self,
        prompts: &[&str],
        options: &TextOptions,
    ) -> Result<Vec<Arc<TextualInversion>>> {
        let mode = self.resolve(options)?.mode;
        let mut used: Vec<Arc<TextualInversion>> = Vec::new();
        for prompt in prompts {
            for chunk in self.chunks_in(prompt, mode)? {
                for vector in chunk.vectors {
                    if !used.iter().any(|e| Arc::ptr_eq(e, &vector.embedding)) {
                        used.push(vector.embedding);
                    }
                }
            }
        }
        Ok(used)
    }

    /// Encode prompts to `[prompts.len(), 77 · chunks, hidden]` with this encoder's defaults.
    pub fn encode_prompts(&self, backend: &B, prompts: &[&str]) -> Result<B::Tensor> {
        self.encode_with(backend, prompts, &TextOptions::default())
    }

    /// [`encode_prompts`](Self::encode_prompts) with `options` overriding the defaults.
    pub fn encode_with(
        &self,
        backend: &B,
        prompts: &[&str],
        options: &TextOptions,
    ) -> Result<B::Tensor> {
        let settings = self.resolve(options)?;
        if prompts.is_empty() {
            return Err(sd_core::Error::invalid_argument(
                "prompts",
                "no prompts to encode",
            ));
        }
        let embeddings = self.embeddings();
        let per_prompt = prompts
            .iter()
            .map(|prompt| self.chunker.chunks_with(prompt, settings.mode, &embeddings))
            .collect::<Result<Vec<_>>>()?;
        let chunk_count = per_prompt.iter().map(Vec::len).max().unwrap_or(1);
        let empty = self.chunker.empty_chunk();
        let mut outputs = Vec::with_capacity(chunk_count);
        for index in 0..chunk_count {
            let column: Vec<&PromptChunk> = per_prompt
                .iter()
                .map(|chunks| chunks.get(index).unwrap_or(&empty))
                .collect();
            outputs.push(self.encode_chunk_column(backend, &column, settings.clip_skip)?);
        }
        if outputs.len() == 1 {
            return Ok(outputs.swap_remove(0));
        }
        let refs: Vec<&B::Tensor> = outputs.iter().collect();
        backend.concat(&refs, 1)
    }

    /// One chunk per prompt through the transformer, with emphasis applied.
    fn encode_chunk_column(
        &self,
        backend: &B,
        chunks: &[&PromptChunk],
        clip_skip: usize,
    ) -> Result<B::Tensor> {
        let mut ids: Vec<u32> = chunks.iter().flat_map(|c| c.ids.iter().copied()).collect();
        // Embedding positions: the vector replaces the token embedding, so the id only has to
        // be a valid one (diffusers' added ids lie past the model's vocabulary).
        let mut vectors = Vec::new();
        for (row, chunk) in chunks.iter().enumerate() {
            for vector in &chunk.vectors {
                let at = row * chunk.ids.len() + vector.position;
                ids[at] = EMBEDDING_PLACEHOLDER_ID;
                vectors.push((at, vector.values()));
            }
        }
        let hidden =
            self.model
                .forward_with_vectors(backend, &ids, chunks.len(), clip_skip, &vectors)?;
        if chunks.iter().all(|c| c.is_unweighted()) {
            return Ok(hidden);
        }
        let mut host = backend.download(&hidden)?;
        for (row, chunk) in chunks.iter().enumerate() {
            if !chunk.is_unweighted() {
                let mut states = host.index_axis_mut(ndarray::Axis(0), row);
                apply_emphasis(&mut states, &chunk.weights);
            }
        }
        backend.upload(&host)
    }
}

/// A1111's "Original" emphasis on one chunk's hidden states `[seq, hidden]`: scale each
/// position by its weight, then restore the mean the states had before.
fn apply_emphasis(states: &mut ndarray::ArrayViewMutD<'_, f32>, weights: &[f32]) {
    let original_mean = mean(states);
    for (mut position, &weight) in states.outer_iter_mut().zip(weights) {
        position.mapv_inplace(|v| v * weight);
    }
    let weighted_mean = mean(states);
    // A1111 divides unguarded; a zero mean (all weights 0) would turn the chunk into NaNs.
    if weighted_mean != 0.0 {
        let restore = original_mean / weighted_mean;
        states.mapv_inplace(|v| v * restore);
    }
}

fn mean(states: &ndarray::ArrayViewMutD<'_, f32>) -> f32 {
    let sum: f64 = states.iter().map(|&v| f64::from(v)).sum();
    (sum / states.len().max(1) as f64) as f32
}

impl<B: Backend> TextEncoder<B> for ClipTextEncoder<B> {
    fn encode(&self, backend: &B, prompts: &[&str], options: &TextOptions) -> Result<B::Tensor> {
        self.encode_with(backend, prompts, options)
    }

    fn hidden_size(&self) -> usize {
        self.model.hidden_size()
    }
}
