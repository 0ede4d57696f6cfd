//! Textual-inversion embeddings: named runs of vectors that stand in for words of a prompt.
//!
//! An embedding is `n` vectors as wide as the text encoder's token embeddings (768 for SD 1.5).
//! [`PromptEmbeddings`] prepares a set of them for one tokenizer, for both prompt modes:
//!
//! - **A1111** (AUTOMATIC1111's `EmbeddingDatabase`): the embedding's name is tokenized, and
//!   wherever that token sequence appears in a prompt or negative prompt (the longest name first
//!   where several start alike) its tokens are replaced by the `n` vectors, each with the emphasis
//!   of the text around it: `(name:1.2)` weights all `n`. The vectors stay together: if they do
//!   not fit in what is left of the current 75-token chunk, the chunk is closed and they start
//!   the next one ([`crate::chunks`]).
//! - **Plain** (diffusers' `load_textual_inversion(file, token=name)`): the tokenizer gains the
//!   added tokens `name`, `name_1`, … `name_{n-1}`; a prompt's text `name` is first rewritten to
//!   `name name_1 … name_{n-1}` (a case-sensitive text replacement, as diffusers'
//!   `maybe_convert_prompt` does, while the tokenizer matches added tokens case-insensitively),
//!   then tokenized and truncated as usual; each added token's id takes its vector. As in
//!   diffusers, a name already in the vocabulary (`style`, say) cannot be added: plain-mode
//!   prompts then fail with an error naming it.
//!
//! In both, the vector replaces the token embedding at its position; the position embedding is
//! added as for any token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::Array2;
use sd_core::{Error, Result};

use crate::tokenizer::ClipTokenizer;

/// One textual-inversion embedding: a name and `[n, width]` vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct TextualInversion {
    name: String,
    vectors: Array2<f32>,
    source: Option<PathBuf>,
}

impl TextualInversion {
    /// An embedding called `name` (what prompts write; A1111 and this crate's loaders use the
    /// file stem) with vectors `[n, width]`, `n ≥ 1`.
    pub fn new(name: impl Into<String>, vectors: Array2<f32>) -> Result<Self> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(Error::invalid_argument("embedding", "an empty name"));
        }
        if vectors.nrows() == 0 || vectors.ncols() == 0 {
            return Err(Error::invalid_argument(
                "embedding",
                format!("{name}: no vectors (shape {:?})", vectors.shape()),
            ));
        }
        Ok(TextualInversion {
            name,
            vectors,
            source: None,
        })
    }

    /// Record the file the embedding came from (for errors and the infotext's `TI hashes`).
    pub fn with_source(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(path.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `[n, width]`.
    pub fn vectors(&self) -> &Array2<f32> {
        &self.vectors
    }

    /// How many vectors (tokens' worth of prompt) the embedding takes.
    pub fn len(&self) -> usize {
        self.vectors.nrows()
    }

    /// Never true: an embedding has one vector at least.
    pub fn is_empty(&self) -> bool {
        self.vectors.nrows() == 0
    }

    pub fn width(&self) -> usize {
        self.vectors.ncols()
    }

    /// The file it was read from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The file, or the name when it came from no file, as errors show it.
    fn origin(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("<embedding {}>", self.name)))
    }
}

/// One position of a chunk that takes an embedding's vector instead of its token's.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingVector {
    /// The position in the chunk (0 is the start token).
    pub position: usize,
    pub embedding: Arc<TextualInversion>,
    /// Which of the embedding's vectors.
    pub index: usize,
}

impl EmbeddingVector {
    /// The vector itself.
    pub fn values(&self) -> ndarray::ArrayView1<'_, f32> {
        self.embedding.vectors.row(self.index)
    }
}

/// Plain mode's tokenizer with the embeddings' added tokens.
#[derive(Debug, Clone)]
struct AddedTokens {
    tokenizer: ClipTokenizer,
    /// Added token id → (embedding, vector index).
    vectors: HashMap<u32, (usize, usize)>,
    /// Multi-vector names → what diffusers rewrites them to (`name name_1 …`).
    rewrites: Vec<(String, String)>,
}

/// A set of embeddings prepared for one tokenizer and text-encoder width. Cheap to share
/// (`Arc`); empty by default.
#[derive(Debug, Clone, Default)]
pub struct PromptEmbeddings {
    embeddings: Vec<Arc<TextualInversion>>,
    /// First token of a name → (the name's tokens, embedding index), longest first.
    by_first_token: HashMap<u32, Vec<(Vec<u32>, usize)>>,
    /// Plain mode: the extended tokenizer, or why diffusers would refuse these names.
    plain: Option<std::result::Result<AddedTokens, String>>,
}

/// The most vectors one embedding may have: they must fit in one 75-token chunk.
pub const MAX_VECTORS: usize = 75;

impl PromptEmbeddings {
    /// Prepare `embeddings` for `tokenizer` and a text encoder `width` wide. Errors: an
    /// embedding of another width ([`Error::InvalidEmbedding`] naming its file and both widths;
    /// SD 2.x embeddings are 1024 wide), more than [`MAX_VECTORS`] vectors, two embeddings of one
    /// name, a name that tokenizes to nothing.
    pub fn new(
        tokenizer: &ClipTokenizer,
        width: usize,
        embeddings: Vec<TextualInversion>,
    ) -> Result<Self> {
        let mut by_first_token: HashMap<u32, Vec<(Vec<u32>, usize)>> = HashMap::new();
        let mut names: HashMap<&str, &TextualInversion> = HashMap::new();
        for (index, embedding) in embeddings.iter().enumerate() {
            let bad = |reason: String| Error::InvalidEmbedding {
                path: embedding.origin(),
                reason,
            };
            if embedding.width() != width {
                return Err(bad(format!(
                    "vectors {} wide, the text encoder's are {width} (an embedding for another \
                     model: SD 2.x's are 1024 wide, SD 1.x's 768)",
                    embedding.width()
                )));
            }
            if embedding.len() > MAX_VECTORS {
                return Err(bad(format!(
                    "{} vectors; at most {MAX_VECTORS} fit in a prompt chunk",
                    embedding.len()
                )));
            }
            if let Some(other) = names.insert(&embedding.name, embedding) {
                return Err(bad(format!(
                    "its name {} is also the name of {}",
                    embedding.name,
                    other.origin().display()
                )));
            }
            let ids = tokenizer.tokenize(&embedding.name)?;
            let Some(&first) = ids.first() else {
                return Err(bad(format!("its name {:?} has no tokens", embedding.name)));
            };
            let entries = by_first_token.entry(first).or_default();
            entries.push((ids, index));
            entries.sort_by_key(|(ids, _)| std::cmp::Reverse(ids.len()));
        }
        let plain = (!embeddings.is_empty()).then(|| added_tokens(tokenizer, &embeddings));
        Ok(PromptEmbeddings {
            embeddings: embeddings.into_iter().map(Arc::new).collect(),
            by_first_token,
            plain,
        })
    }

    /// The embeddings, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<TextualInversion>> {
        self.embeddings.iter()
    }

    pub fn len(&self) -> usize {
        self.embeddings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.embeddings.is_empty()
    }

    /// The embedding called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<TextualInversion>> {
        self.embeddings.iter().find(|e| e.name == name)
    }

    /// A1111 mode: the embedding whose name's tokens start at `tokens[at]` (the longest such
    /// name), with how many tokens it covers.
    pub fn find_at(&self, tokens: &[u32], at: usize) -> Option<(&Arc<TextualInversion>, usize)> {
        let candidates = self.by_first_token.get(tokens.get(at)?)?;
        candidates
            .iter()
            .find(|(ids, _)| tokens[at..].starts_with(ids))
            .map(|(ids, index)| (&self.embeddings[*index], ids.len()))
    }

    /// Plain mode: `(ids, vectors)` of `prompt` as diffusers tokenizes it after
    /// `load_textual_inversion`: the multi-vector names rewritten, then `encode_padded` to
    /// `length` with the added tokens; `vectors` names the positions that take an embedding's
    /// vector.
    pub(crate) fn encode_plain(
        &self,
        base: &ClipTokenizer,
        prompt: &str,
        length: usize,
    ) -> Result<(Vec<u32>, Vec<EmbeddingVector>)> {
        let added = match &self.plain {
            None => return Ok((base.encode_padded(prompt, length)?, Vec::new())),
            Some(Err(reason)) => {
                return Err(Error::invalid_argument("prompt_mode", reason.clone()));
            }
            Some(Ok(added)) => added,
        };
        let tokens = added.tokenizer.token_strings(prompt)?;
        let mut prompt = prompt.to_string();
        // diffusers replaces each multi-vector name that the tokenizer found, as text.
        for (name, rewrite) in &added.rewrites {
            if tokens.iter().any(|t| t == name) {
                prompt = prompt.replace(name.as_str(), rewrite);
            }
        }
        let ids = added.tokenizer.encode_padded(&prompt, length)?;
        let vectors = ids
            .iter()
            .enumerate()
            .filter_map(|(position, id)| {
                let &(embedding, index) = added.vectors.get(id)?;
                Some(EmbeddingVector {
                    position,
                    embedding: Arc::clone(&self.embeddings[embedding]),
                    index,
                })
            })
            .collect();
        Ok((ids, vectors))
    }
}

/// diffusers' tokens for each embedding (`name`, `name_1`, …), added to a copy of `tokenizer`
/// in order; or, as diffusers refuses, the first token already in the vocabulary.
fn added_tokens(
    tokenizer: &ClipTokenizer,
    embeddings: &[TextualInversion],
) -> std::result::Result<AddedTokens, String> {
    let mut tokens = Vec::new();
    let mut rewrites = Vec::new();
    for embedding in embeddings {
        let names: Vec<String> = (0..embedding.len())
            .map(|i| match i {
                0 => embedding.name.clone(),
                i => format!("{}_{i}", embedding.name),
            })
            .collect();
        for name in &names {
            if tokenizer.token_id(name).is_some() || tokens.contains(name) {
                return Err(format!(
                    "embedding {}: its plain-mode token {name} is already in the tokenizer's \
                     vocabulary, so diffusers' load_textual_inversion refuses it; rename the \
                     file or use A1111 prompt mode",
                    embedding.name
                ));
            }
        }
        if names.len() > 1 {
            rewrites.push((embedding.name.clone(), names.join(" ")));
        }
        tokens.extend(names);
    }
    let extended = tokenizer.with_added_tokens(&tokens);
    let mut vectors = HashMap::new();
    let mut names = tokens.iter();
    for (index, embedding) in embeddings.iter().enumerate() {
        for vector in 0..embedding.len() {
            let id = names.next().and_then(|name| extended.token_id(name));
            let id = id.ok_or_else(|| format!("embedding {}: token not added", embedding.name))?;
            vectors.insert(id, (index, vector));
        }
    }
    Ok(AddedTokens {
        tokenizer: extended,
        vectors,
        rewrites,
    })
}
