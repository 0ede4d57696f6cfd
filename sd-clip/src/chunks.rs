//! From prompt text to 77-token chunks with a weight per token.
//!
//! Two modes ([`PromptMode`]):
//! - **A1111** (the default): the prompt is parsed for emphasis ([`crate::prompt`]), each piece is
//!   tokenized on its own, and the tokens are laid into chunks of 75 (start + 75 + end = 77),
//!   as many as the prompt needs. `BREAK` ends a chunk early. When a chunk fills up and a comma
//!   came in its last 20 tokens, the words after that comma move to the next chunk
//!   (A1111's `comma_padding_backtrack`, default 20), so a phrase is not cut in two.
//! - **Plain**: the text is taken literally and truncated to one chunk, exactly as diffusers'
//!   `StableDiffusionPipeline` tokenizes (`padding="max_length", truncation=True`).
//!
//! Chunks are padded with the end token, which SD 1.x also uses as its pad token.
//!
//! Textual-inversion embeddings ([`crate::embeddings`]) take positions of a chunk as vectors:
//! in A1111 mode a multi-vector embedding is never split between two chunks.

use std::sync::Arc;

pub use sd_core::PromptMode;
use sd_core::Result;

use crate::embeddings::{EmbeddingVector, PromptEmbeddings, TextualInversion};
use crate::prompt::{PromptPiece, parse_prompt};
use crate::tokenizer::ClipTokenizer;

/// The id A1111 puts where an embedding's vectors go (its vectors replace the token's).
pub const EMBEDDING_PLACEHOLDER_ID: u32 = 0;

/// One window of the text encoder: `ids` start with the start token and end with the end
/// token; `weights` holds the emphasis of each position (1.0 for the special tokens);
/// `vectors` the positions an embedding's vector fills instead of its id's token embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunk {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
    pub vectors: Vec<EmbeddingVector>,
}

impl PromptChunk {
    /// Whether every weight is 1, so emphasis leaves the hidden states unchanged.
    pub fn is_unweighted(&self) -> bool {
        self.weights.iter().all(|&w| w == 1.0)
    }
}

/// Tokens of one prompt piece, as chunking sees them.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenPiece {
    /// Token ids (no start/end tokens) sharing one weight.
    Tokens { ids: Vec<u32>, weight: f64 },
    /// End the current chunk.
    Break,
}

/// How far back A1111 looks for a comma to break a full chunk at (`comma_padding_backtrack`).
pub const DEFAULT_COMMA_BACKTRACK: usize = 20;

/// Lays prompts into chunks for one tokenizer and model length.
#[derive(Debug, Clone)]
pub struct PromptChunker {
    tokenizer: ClipTokenizer,
    tokens_per_chunk: usize,
    comma_id: Option<u32>,
    comma_backtrack: usize,
}

impl PromptChunker {
    /// Chunks of `tokens_per_chunk` prompt tokens (the model's positions − 2: 75 for SD 1.5).
    pub fn new(tokenizer: ClipTokenizer, tokens_per_chunk: usize) -> Self {
        let comma_id = tokenizer.token_id(",</w>");
        PromptChunker {
            tokenizer,
            tokens_per_chunk,
            comma_id,
            comma_backtrack: DEFAULT_COMMA_BACKTRACK,
        }
    }

    /// Change how many tokens back a comma may be to break a full chunk there (0: never).
    pub fn with_comma_backtrack(mut self, tokens: usize) -> Self {
        self.comma_backtrack = tokens;
        self
    }

    /// The tokenizer the chunker uses.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The length of every chunk, start and end tokens included (77 for SD 1.5).
    pub fn chunk_len(&self) -> usize {
        self.tokens_per_chunk + 2
    }

    /// The chunks of one prompt: one or more in A1111 mode, exactly one in plain mode.
    pub fn chunks(&self, prompt: &str, mode: PromptMode) -> Result<Vec<PromptChunk>> {
        self.chunks_with(prompt, mode, &PromptEmbeddings::default())
    }

    /// [`chunks`](Self::chunks) with textual-inversion `embeddings` (prepared for this
    /// chunker's tokenizer) in the prompt.
    pub fn chunks_with(
        &self,
        prompt: &str,
        mode: PromptMode,
        embeddings: &PromptEmbeddings,
    ) -> Result<Vec<PromptChunk>> {
        match mode {
            PromptMode::Plain => {
                let (ids, vectors) =
                    embeddings.encode_plain(&self.tokenizer, prompt, self.chunk_len())?;
                let weights = vec![1.0; ids.len()];
                Ok(vec![PromptChunk {
                    ids,
                    weights,
                    vectors,
                }])
            }
            PromptMode::A1111 => {
                let pieces = parse_prompt(prompt)?
                    .into_iter()
                    .map(|piece| match piece {
                        PromptPiece::Break => Ok(TokenPiece::Break),
                        PromptPiece::Text { text, weight } => Ok(TokenPiece::Tokens {
                            ids: self.tokenizer.tokenize(&text)?,
                            weight,
                        }),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(self.chunk_tokens_with(&pieces, embeddings))
            }
        }
    }

    /// A chunk of nothing: start, then end tokens (what the empty prompt gives). Prompts with
    /// fewer chunks than others in a batch are padded with it.
    pub fn empty_chunk(&self) -> PromptChunk {
        ChunkBuilder::new(self).finish_chunk(Vec::new(), Vec::new(), Vec::new())
    }

    /// Lay weighted tokens into chunks, A1111's way.
    pub fn chunk_tokens(&self, pieces: &[TokenPiece]) -> Vec<PromptChunk> {
        self.chunk_tokens_with(pieces, &PromptEmbeddings::default())
    }

    /// [`chunk_tokens`](Self::chunk_tokens), replacing each embedding name found in a piece's
    /// tokens by the embedding's vectors (A1111's `find_embedding_at_position`).
    pub fn chunk_tokens_with(
        &self,
        pieces: &[TokenPiece],
        embeddings: &PromptEmbeddings,
    ) -> Vec<PromptChunk> {
        let mut builder = ChunkBuilder::new(self);
        for piece in pieces {
            match piece {
                TokenPiece::Break => builder.next_chunk(),
                TokenPiece::Tokens { ids, weight } => {
                    let mut at = 0;
                    while at < ids.len() {
                        match embeddings.find_at(ids, at) {
                            Some((embedding, covered)) => {
                                builder.push_embedding(ids[at], embedding, *weight);
                                at += covered;
                            }
                            None => {
                                builder.push(ids[at], *weight);
                                at += 1;
                            }
                        }
                    }
                }
            }
        }
        builder.finish()
    }
}

/// Which embedding vector a position holds, while a chunk is being filled.
type Slot = Option<(Arc<TextualInversion>, usize)>;

/// The chunk being filled and those already done.
struct ChunkBuilder<'a> {
    chunker: &'a PromptChunker,
    done: Vec<PromptChunk>,
    ids: Vec<u32>,
    weights: Vec<f64>,
    slots: Vec<Slot>,
    /// Index in `ids` of the last comma of the current chunk.
    last_comma: Option<usize>,
}

impl<'a> ChunkBuilder<'a> {
    fn new(chunker: &'a PromptChunker) -> Self {
        ChunkBuilder {
            chunker,
            done: Vec::new(),
            ids: Vec::new(),
            weights: Vec::new(),
            slots: Vec::new(),
            last_comma: None,
        }
    }

    fn push(&mut self, id: u32, weight: f64) {
        self.make_room(id);
        self.ids.push(id);
        self.weights.push(weight);
        self.slots.push(None);
    }

    /// An embedding whose name starts with token `first_id`: its vectors, all with `weight`,
    /// in the current chunk if they fit, else at the start of the next (as A1111 does).
    fn push_embedding(&mut self, first_id: u32, embedding: &Arc<TextualInversion>, weight: f64) {
        self.make_room(first_id);
        if self.ids.len() + embedding.len() > self.chunker.tokens_per_chunk {
            self.next_chunk();
        }
        for index in 0..embedding.len() {
            self.ids.push(EMBEDDING_PLACEHOLDER_ID);
            self.weights.push(weight);
            self.slots.push(Some((Arc::clone(embedding), index)));
        }
    }

    /// Before token `id` goes in: note a comma, and when the chunk is full close it (moving the
    /// words after a recent comma to the next chunk).
    fn make_room(&mut self, id: u32) {
        let full = self.ids.len() == self.chunker.tokens_per_chunk;
        if Some(id) == self.chunker.comma_id {
            self.last_comma = Some(self.ids.len());
        } else if full && self.chunker.comma_backtrack > 0 {
            // Move the words after a recent comma to the next chunk.
            if let Some(comma) = self
                .last_comma
                .filter(|&at| self.ids.len() - at <= self.chunker.comma_backtrack)
            {
                let moved_ids = self.ids.split_off(comma + 1);
                let moved_weights = self.weights.split_off(comma + 1);
                let moved_slots = self.slots.split_off(comma + 1);
                self.next_chunk();
                self.ids = moved_ids;
                self.weights = moved_weights;
                self.slots = moved_slots;
            }
        }
        if self.ids.len() == self.chunker.tokens_per_chunk {
            self.next_chunk();
        }
    }

    /// Close the current chunk (padding it) and start an empty one.
    fn next_chunk(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        let weights = std::mem::take(&mut self.weights);
        let slots = std::mem::take(&mut self.slots);
        let chunk = self.finish_chunk(ids, weights, slots);
        self.done.push(chunk);
        self.last_comma = None;
    }

    fn finish_chunk(
        &self,
        tokens: Vec<u32>,
        token_weights: Vec<f64>,
        slots: Vec<Slot>,
    ) -> PromptChunk {
        let tokenizer = &self.chunker.tokenizer;
        let len = self.chunker.chunk_len();
        let mut ids = Vec::with_capacity(len);
        ids.push(tokenizer.start_id());
        ids.extend_from_slice(&tokens);
        ids.resize(len, tokenizer.end_id());
        // A1111 hands its Python-float weights to torch as float32.
        let mut weights = Vec::with_capacity(len);
        weights.push(1.0);
        weights.extend(token_weights.iter().map(|&w| w as f32));
        weights.resize(len, 1.0);
        // Position 0 is the start token.
        let vectors = slots
            .into_iter()
            .enumerate()
            .filter_map(|(at, slot)| {
                slot.map(|(embedding, index)| EmbeddingVector {
                    position: at + 1,
                    embedding,
                    index,
                })
            })
            .collect();
        PromptChunk {
            ids,
            weights,
            vectors,
        }
    }

    fn finish(mut self) -> Vec<PromptChunk> {
        if !self.ids.is_empty() || self.done.is_empty() {
            self.next_chunk();
        }
        self.done
    }
}
