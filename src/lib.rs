//! Stable Diffusion 1.5 inference in Rust: load a checkpoint, generate images.
//!
//! ```no_run
//! use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
//! # fn main() -> stable_diffusion::Result<()> {
//! // An LDM single file (`v1-5-pruned-emaonly.safetensors`) or a diffusers folder.
//! let sd = StableDiffusion::load("v1-5-pruned-emaonly.safetensors", LoadOptions::default())?;
//! let request = GenerationRequest::new("a lighthouse at dusk, oil painting")
//!     .negative_prompt("blurry")
//!     .scheduler("Euler a")
//!     .clip_skip(2)
//!     .steps(25)
//!     .seed(1234);
//! let generation = sd.generate(&request)?;
//! stable_diffusion::png::write_png("lighthouse.png", &generation.images[0], None)?;
//! # Ok(()) }
//! ```
//!
//! - [`StableDiffusion`] (`model.rs`): loading (with [`LoadOptions`]) and generation, generic
//!   over the backend; one model serves many requests (sampler, clip skip, prompt mode and seeds
//!   travel on each [`GenerationRequest`]), from several threads through an `Arc`.
//! - [`codec`]: [`SdCodec`](codec::SdCodec), the VAE with an optional TAESD final decode.
//! - [`configs`]: where component configs come from (folder, SD 1.5 built-ins).
//! - [`lora`]: LoRA files (kohya, LoCon, PEFT, LoHa, LoKr) merged as weight overlays.
//! - [`embeddings`]: textual-inversion files (A1111 / kohya / diffusers, `.safetensors`, `.pt`,
//!   `.bin`) for the prompts; [`torch_file`] reads `.pt` files without running their pickle.
//! - [`output`]: where images go: batch names, checks before the run, atomic writes.
//! - [`png`]: reading and writing PNG files with an A1111 `parameters` text chunk;
//!   [`parameters`] builds and reads that text.
//! - [`image_file`]: init images and masks in PNG, JPEG or WebP, size-checked before decoding.
//! - [`model_hash`]: A1111's short model hash.
//! - `server` (feature `server`, on by default): `sd serve`, AUTOMATIC1111's HTTP API.
//! - [`preview`]: live previews from a progress callback's latents (approx or TAESD).
//! - [`safety`]: which safety checker runs ([`SafetyCheckerChoice`]); the checker is
//!   [`sd_clip::SafetyChecker`].
//! - The generation itself is [`sd_core::pipeline`]: same seed, same latents as diffusers.

pub mod codec;
pub mod configs;
pub mod embeddings;
pub mod image_file;
pub mod infotext;
pub mod lora;
mod model;
pub mod model_hash;
pub mod output;
pub mod parameters;
pub mod png;
pub mod preview;
pub mod safety;
#[cfg(feature = "server")]
pub mod server;
pub mod torch_file;

pub use model::{DEFAULT_SCHEDULER, LoadOptions, SdPipeline, StableDiffusion};
pub use safety::SafetyCheckerChoice;
pub use sd_core::pipeline::{
    Control, Generation, GenerationRequest, GrayImage, HiresFix, HiresTarget, InitImage,
    LatentUpscaler, MaskedContent, RgbImage, SamplerSettings, Seeds, StepProgress,
};
pub use sd_core::{Error, PromptMode, Result, RngSource, TextOptions};

pub use sd_clip as clip;
pub use sd_core as core;
#[cfg(any(feature = "cuda", feature = "cuda-13"))]
pub use sd_cuda as cuda;
pub use sd_schedulers as schedulers;
pub use sd_unet as unet;
pub use sd_vae as vae;
