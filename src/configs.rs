//! Where a model's configs come from: a diffusers folder's own `config.json` files, or, for an
//! LDM single file (which carries none), SD 1.5's built-in ones — or those of a diffusers folder
//! named with [`LoadOptions::config_dir`](crate::LoadOptions::config_dir).

use std::path::{Path, PathBuf};

use sd_clip::{ClipTextConfig, ClipTokenizer};
use sd_core::Result;
use sd_core::weights::Variant;
use sd_schedulers::SchedulerConfig;
use sd_unet::UNetConfig;
use sd_vae::VaeConfig;

/// The configs and tokenizer of the four components.
#[derive(Debug, Clone)]
pub struct ModelConfigs {
    pub text_encoder: ClipTextConfig,
    pub tokenizer: ClipTokenizer,
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub scheduler: SchedulerConfig,
}

impl ModelConfigs {
    /// SD 1.5's configs, with the UNet's input channels of `variant` (9 for inpainting).
    pub fn sd15(variant: Variant) -> Result<Self> {
        Ok(Self {
            text_encoder: ClipTextConfig::sd15(),
            tokenizer: ClipTokenizer::sd15()?,
            unet: UNetConfig::sd15(variant.unet_in_channels())?,
            vae: VaeConfig::sd15()?,
            scheduler: SchedulerConfig::sd15(),
        })
    }

    /// The configs of a diffusers pipeline folder: `text_encoder/config.json`,
    /// `unet/config.json`, `vae/config.json`, `scheduler/scheduler_config.json` (SD 1.5's when
    /// absent) and `tokenizer/` (the embedded SD 1.5 tokenizer when absent).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
        let scheduler = if scheduler_path.is_file() {
            SchedulerConfig::from_file(&scheduler_path)?
        } else {
            SchedulerConfig::sd15()
        };
        Ok(Self {
            text_encoder: ClipTextConfig::from_file(component_config(dir, "text_encoder"))?,
            tokenizer: ClipTokenizer::for_pipeline(dir)?,
            unet: UNetConfig::from_file(component_config(dir, "unet"))?,
            vae: VaeConfig::from_file(component_config(dir, "vae"))?,
            scheduler,
        })
    }

    /// Image sides the model was trained at: the UNet's `sample_size` (latents) times the VAE
    /// factor, as diffusers picks when no size is given.
    pub fn default_image_side(&self) -> usize {
        let latent_side = self
            .unet
            .other
            .get("sample_size")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(64);
        latent_side.saturating_mul(self.vae.downscale_factor())
    }
}

fn component_config(dir: &Path, component: &str) -> PathBuf {
    dir.join(component).join("config.json")
}
