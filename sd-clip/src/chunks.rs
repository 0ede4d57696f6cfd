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

pub use sd_core::PromptMode;
use sd_core::Result;

use crate::prompt::{PromptPiece, parse_prompt};
use crate::tokenizer::ClipTokenizer;

/// One window of the text encoder: `ids` start with the start token and end with the end
/// token; `weights` holds the emphasis of each position (1.0 for the special tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunk {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
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
        match mode {
            PromptMode::Plain => {
                let ids = self.tokenizer.encode_padded(prompt, self.chunk_len())?;
                let weights = vec![1.0; ids.len()];
                Ok(vec![PromptChunk { ids, weights }])
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
                Ok(self.chunk_tokens(&pieces))
            }
        }
    }

    /// A chunk of nothing: start, then end tokens (what the empty prompt gives). Prompts with
    /// fewer chunks than others in a batch are padded with it.
    pub fn empty_chunk(&self) -> PromptChunk {
        ChunkBuilder::new(self).finish_chunk(Vec::new(), Vec::new())
    }

    /// Lay weighted tokens into chunks, A1111's way.
    pub fn chunk_tokens(&self, pieces: &[TokenPiece]) -> Vec<PromptChunk> {
        let mut builder = ChunkBuilder::new(self);
        for piece in pieces {
            match piece {
                TokenPiece::Break => builder.next_chunk(),
                TokenPiece::Tokens { ids, weight } => {
                    for &id in ids {
                        builder.push(id, *weight);
                    }
                }
            }
        }
        builder.finish()
    }
}

/// The chunk being filled and those already done.
struct ChunkBuilder<'a> {
    chunker: &'a PromptChunker,
    done: Vec<PromptChunk>,
    ids: Vec<u32>,
    weights: Vec<f64>,
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
            last_comma: None,
        }
    }

    fn push(&mut self, id: u32, weight: f64) {
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
                self.next_chunk();
                self.ids = moved_ids;
                self.weights = moved_weights;
            }
        }
        if self.ids.len() == self.chunker.tokens_per_chunk {
            self.next_chunk();
        }
        self.ids.push(id);
        self.weights.push(weight);
    }

    /// Close the current chunk (padding it) and start an empty one.
    fn next_chunk(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        let weights = std::mem::take(&mut self.weights);
        let chunk = self.finish_chunk(ids, weights);
        self.done.push(chunk);
        self.last_comma = None;
    }

    fn finish_chunk(&self, tokens: Vec<u32>, token_weights: Vec<f64>) -> PromptChunk {
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
        PromptChunk { ids, weights }
    }

    fn finish(mut self) -> Vec<PromptChunk> {
        if !self.ids.is_empty() || self.done.is_empty() {
            self.next_chunk();
        }
        self.done
    }
}
