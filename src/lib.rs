//! Stable Diffusion 1.5 inference in Rust: load a checkpoint, generate images.
//!
//! ```no_run
//! use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
//! # fn main() -> sd_core::Result<()> {
//! // An LDM single file (`v1-5-pruned-emaonly.safetensors`) or a diffusers folder.
//! let mut sd = StableDiffusion::load("v1-5-pruned-emaonly.safetensors", LoadOptions::default())?;
//! sd.set_scheduler("Euler a")?;
//! let request = GenerationRequest::new("a lighthouse at dusk, oil painting")
//!     .negative_prompt("blurry")
//!     .steps(25)
//!     .seed(1234);
//! let generation = sd.generate(&request)?;
//! stable_diffusion::png::write_png("lighthouse.png", &generation.images[0], None)?;
//! # Ok(()) }
//! ```
//!
//! - [`StableDiffusion`] (`model.rs`): loading (with [`LoadOptions`]), sampler and prompt
//!   settings, generation; generic over the backend (CPU today).
//! - [`configs`]: where component configs come from (folder, SD 1.5 built-ins).
//! - [`png`]: reading and writing PNG files with an A1111 `parameters` text chunk;
//!   [`parameters`] builds and reads that text.
//! - [`model_hash`]: A1111's short model hash.
//! - The generation itself is [`sd_core::pipeline`]: same seed, same latents as diffusers.

pub mod configs;
mod model;
pub mod model_hash;
pub mod parameters;
pub mod png;

pub use model::{DEFAULT_SCHEDULER, LoadOptions, SdPipeline, StableDiffusion};
pub use sd_clip::PromptMode;
pub use sd_core::pipeline::{
    Control, Generation, GenerationRequest, GrayImage, InitImage, RgbImage, Seeds, StepProgress,
};

pub use sd_clip as clip;
pub use sd_core as core;
pub use sd_cuda as cuda;
pub use sd_schedulers as schedulers;
pub use sd_unet as unet;
pub use sd_vae as vae;
