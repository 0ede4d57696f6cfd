//! sd-clip: Stable Diffusion 1.x's text side. The CLIP BPE tokenizer, AUTOMATIC1111 prompt
//! weighting with prompts of any length, and the CLIP text transformer over any sd-core
//! [`Backend`](sd_core::Backend).
//!
//! ```no_run
//! use sd_clip::{ClipTextEncoder, PromptMode};
//! use sd_core::cpu::CpuBackend;
//!
//! # fn main() -> sd_core::Result<()> {
//! let b = CpuBackend::new();
//! // A diffusers folder, or an SD 1.x single-file checkpoint (`.safetensors`).
//! let encoder = ClipTextEncoder::load(&b, "stable-diffusion-v1-5")?.with_clip_skip(1)?;
//! let cond = encoder.encode_prompts(&b, &["lowres, blurry", "a (red:1.3) fox in the snow, ((detailed))"])?;
//! // cond: [2, 77, 768] (77 · chunks for long prompts); split into negative and positive.
//! let _diffusers_like = encoder.with_mode(PromptMode::Plain);
//! # Ok(()) }
//! ```
//!
//! # Parts
//!
//! - [`tokenizer`]: [`ClipTokenizer`], ids identical to transformers 5's `CLIPTokenizer`. The SD 1.5
//!   vocabulary (OpenAI's, MIT licence: `data/SOURCE.md`) is embedded; a diffusers `tokenizer/`
//!   folder (`vocab.json` + `merges.txt`, or `tokenizer.json`) loads too.
//! - [`prompt`]: the A1111 emphasis grammar (below).
//! - [`chunks`]: prompts to 77-token chunks with a weight per token; [`PromptMode`].
//! - [`embeddings`]: textual-inversion embeddings in prompts.
//! - [`config`], [`model`]: [`ClipTextConfig`] from `config.json`, [`ClipTextTransformer`].
//! - [`encoder`]: [`ClipTextEncoder`], sd-core's [`TextEncoder`](sd_core::TextEncoder).
//! - [`vision`]: [`ClipVisionTransformer`], the image tower (same encoder layers as the text one).
//! - [`safety`]: [`SafetyChecker`], diffusers' `StableDiffusionSafetyChecker`, with
//!   [`image_processor`] ([`ClipImageProcessor`]) and [`resample`] (Pillow's resize).
//!
//! # Prompt syntax (A1111 mode, the default)
//!
//! | written | meaning |
//! |---|---|
//! | `(text)` | weight × 1.1; nests: `((text))` × 1.21 |
//! | `[text]` | weight ÷ 1.1; nests |
//! | `(text:1.3)` | weight × 1.3 (`[+-]?[0-9.]+`, spaces allowed around the number) |
//! | `\(` `\)` `\[` `\]` `\\` | the character itself |
//! | `BREAK` | start a new chunk (upper case, a word on its own, outside brackets) |
//!
//! Unclosed brackets run to the end of the prompt; closers with nothing open are text; a weight
//! that is not a number (`(a:1.2.3)`) is an [`InvalidArgument`](sd_core::Error::InvalidArgument)
//! error, as it is an exception in A1111. The parser follows A1111's `parse_prompt_attention`
//! exactly; [`prompt`] lists the corner cases. Prompt editing (`[a:b:0.5]`) and alternation
//! (`[a|b]`) are per-step features of A1111's sampler and are not interpreted.
//!
//! # Long prompts
//!
//! Tokens are laid into chunks of 75 (start + 75 + end = 77 positions). When a chunk fills up
//! and a comma came within its last 20 tokens, the words after that comma move to the next
//! chunk (A1111's `comma_padding_backtrack`). Each chunk is encoded on its own and the results are
//! concatenated along the sequence axis. Prompts encoded together are padded with empty chunks
//! (the encoding of `""`) to the same number of chunks, so `[negative, positive]` line up.
//!
//! # Weights
//!
//! After the transformer, each position's hidden state is multiplied by its token's weight and
//! the chunk is rescaled so its mean is what it was before weighting (A1111's "Original"
//! emphasis). A prompt without syntax therefore gives exactly the unweighted hidden states.
//!
//! # Plain mode
//!
//! [`PromptMode::Plain`] takes the text literally (brackets are just characters) and truncates it
//! to 77 tokens exactly as diffusers' `StableDiffusionPipeline` does, so diffusers users get the
//! same embeddings for any text. For prompts of at most 75 tokens without syntax both modes give
//! the same result.
//!
//! # clip_skip
//!
//! Counted as A1111 counts ("Clip skip" / `CLIP_stop_at_last_layers`): 1 uses the last layer,
//! N the output N − 1 layers before the end, always followed by the final layer norm.
//! diffusers' `clip_skip = k` equals `clip_skip = k + 1` here (diffusers' 1 takes
//! `hidden_states[-2]`, the penultimate layer, through the final layer norm).
//!
//! # Where this differs from A1111
//!
//! - The emphasis mean is restored per prompt; A1111 takes one mean over all prompts encoded in
//!   one call (the same thing for its usual batch of one).
//! - Prompts with different chunk counts are padded with empty chunks (A1111's "pad prompt/negative
//!   prompt to be same length" option); by default A1111 instead runs the UNet on cond and uncond
//!   separately.
//! - The tokenizer is transformers 5's (no ftfy, no HTML unescaping). A1111 runs transformers 4's
//!   `CLIPTokenizer`, which fixes text with ftfy and unescapes HTML when ftfy is installed; its
//!   ids then differ for curly apostrophes, ligatures, full-width letters and HTML entities
//!   (see [`tokenizer`]).
//! - A weight written with non-ASCII digits is text here.
//! - When a full chunk moves the words after its last comma to the next chunk, an embedding
//!   among them moves with its vectors; A1111 leaves the vectors behind (its `fixes` stay with
//!   the old chunk while the placeholder tokens move).
//!
//! # Textual inversion
//!
//! [`embeddings`]: [`TextualInversion`] vectors named as prompts write them, prepared for a
//! tokenizer as [`PromptEmbeddings`] (A1111 mode: the name anywhere in the text, its vectors kept
//! in one chunk; plain mode: diffusers' `load_textual_inversion`); an encoder uses those given
//! to [`ClipTextEncoder::set_embeddings`].

pub mod chunks;
pub mod config;
pub mod embeddings;
pub mod encoder;
pub mod image_processor;
pub mod model;
pub mod prompt;
pub mod resample;
pub mod safety;
pub mod tokenizer;
mod transformer;
pub mod vision;

pub use chunks::{PromptChunk, PromptChunker, PromptMode};
pub use config::ClipTextConfig;
pub use embeddings::{EmbeddingVector, PromptEmbeddings, TextualInversion};
pub use encoder::ClipTextEncoder;
pub use image_processor::ClipImageProcessor;
pub use model::ClipTextTransformer;
pub use safety::{SafetyChecker, SafetyVerdict};
pub use tokenizer::ClipTokenizer;
pub use vision::{ClipVisionConfig, ClipVisionTransformer};
