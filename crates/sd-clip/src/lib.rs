//! The CLIP ViT-L/14 BPE tokenizer, A1111 prompt weighting and the CLIP text transformer over any
//! sd-core Backend.

pub mod tokenizer;

pub use tokenizer::ClipTokenizer;
pub mod chunks;
pub mod prompt;
