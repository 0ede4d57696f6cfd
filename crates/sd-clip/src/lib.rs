//! The CLIP ViT-L/14 BPE tokenizer, A1111 prompt weighting and the CLIP text transformer over any
//! sd-core Backend.

pub mod chunks;
pub mod config;
pub mod encoder;
pub mod model;
pub mod prompt;
pub mod tokenizer;

pub use chunks::{PromptChunk, PromptChunker, PromptMode};
pub use config::ClipTextConfig;
pub use encoder::ClipTextEncoder;
pub use model::ClipTextTransformer;
pub use tokenizer::ClipTokenizer;
