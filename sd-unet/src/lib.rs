//! sd-unet: diffusers' `UNet2DConditionModel` (the SD 1.x denoiser) over any sd-core
//! [`Backend`](sd_core::Backend), built from its `config.json`.
//!
//! ```no_run
//! use sd_core::{cpu::CpuBackend, weights::WeightStore};
//! use sd_unet::{UNet2DConditionModel, UNetConfig};
//! # fn demo() -> sd_core::Result<()> {
//! let store = WeightStore::open("stable-diffusion-v1-5")?; // a diffusers folder
//! let config = UNetConfig::from_file("stable-diffusion-v1-5/unet/config.json")?;
//! let unet = UNet2DConditionModel::from_store(&CpuBackend::new(), config, &store)?;
//! # Ok(()) }
//! ```
//!
//! - [`config`]: the serde config and its checks; [`UNetConfig::sd15`] for single files.
//! - [`unet`]: the model and its [`Denoiser`](sd_core::Denoiser) implementation.
//! - [`blocks`]: down, middle and up blocks; [`transformer`]: Transformer2D; [`time_embedding`].
//! - The layers (resnet, up/downsampler, attention, conv, norms) are sd-core's [`sd_core::nn`].

pub mod blocks;
pub mod config;
pub mod time_embedding;
pub mod transformer;
pub mod unet;

pub use config::{DownBlockType, MidBlockType, PerBlock, UNetConfig, UpBlockType};
pub use unet::UNet2DConditionModel;
