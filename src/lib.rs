//! Stable Diffusion 1.5 inference in Rust: the facade over the sd-rs crates.
//!
//! Today this re-exports the building blocks; `StableDiffusion::load` and the `sd` command
//! arrive with the pipeline issue.

pub use sd_clip as clip;
pub use sd_core as core;
pub use sd_cuda as cuda;
pub use sd_schedulers as schedulers;
pub use sd_unet as unet;
pub use sd_vae as vae;
