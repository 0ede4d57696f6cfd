//! sd-vae: diffusers' `AutoencoderKL` (the SD 1.x latent codec) and `AutoencoderTiny` (TAESD) over any sd-core
//! [`Backend`](sd_core::Backend), built from its `config.json`, with tiled encode/decode.
//!
//! ```no_run
//! use sd_core::{cpu::CpuBackend, weights::WeightStore, LatentCodec, TorchGenerator};
//! use sd_vae::{AutoencoderKL, VaeConfig};
//! # fn demo(image: &sd_core::cpu::CpuTensor) -> sd_core::Result<()> {
//! let store = WeightStore::open("stable-diffusion-v1-5")?;
//! let config = VaeConfig::from_file("stable-diffusion-v1-5/vae/config.json")?;
//! let vae = AutoencoderKL::from_store(&CpuBackend::new(), config, &store)?;
//! let dist = vae.encode(&CpuBackend::new(), image)?;                 // img2img: encode,
//! let mut generator = TorchGenerator::new(7);
//! let latents = dist.download(&CpuBackend::new())?.sample(&mut generator); // then draw
//! # Ok(()) }
//! ```
//!
//! - [`config`]: the serde config and its checks; [`VaeConfig::sd15`] for single files.
//! - [`autoencoder`]: the model and its [`LatentCodec`](sd_core::LatentCodec) implementation.
//! - [`coder`]: encoder and decoder; [`blocks`]: their blocks and the mid-block attention.
//! - [`tiny`]: [`AutoencoderTiny`] (TAESD), the small codec for previews and fast decodes.
//! - [`tiling`]: tiled encode/decode. Latents are drawn with sd-core's
//!   [`LatentDist::sample`](sd_core::LatentDist::sample).

pub mod autoencoder;
pub mod blocks;
pub mod coder;
pub mod config;
pub mod tiling;
pub mod tiny;

pub use autoencoder::AutoencoderKL;
pub use config::VaeConfig;
pub use tiling::{TileMode, Tiling};
pub use tiny::{AutoencoderTiny, TinyConfig};
