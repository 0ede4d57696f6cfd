//! `vae/config.json` (diffusers' `AutoencoderKL` config): the one source of every shape.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use sd_core::Result;
use sd_core::config_file::{
    MAX_REPEATS, MAX_WIDTH, check_counts, check_levels, check_positive, config_error, level_scale,
    parse_config, read_config_text,
};

/// The encoder's down blocks (resnets, then a stride-2 downsampler but on the last level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DownEncoderBlockType {
    DownEncoderBlock2D,
}

/// The decoder's up blocks (resnets, then a nearest-2× upsampler but on the last level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpDecoderBlockType {
    UpDecoderBlock2D,
}

/// The fields of an `AutoencoderKL` config.json. Missing optional fields take diffusers'
/// defaults; the shape-defining ones are required.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_image_channels")]
    pub in_channels: usize,
    #[serde(default = "default_image_channels")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<DownEncoderBlockType>,
    pub up_block_types: Vec<UpDecoderBlockType>,
    /// Resnets per encoder level; the decoder has one more per level.
    pub layers_per_block: usize,
    pub latent_channels: usize,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    /// The image side the VAE was trained on: the default tile size of tiled encode/decode.
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    /// Latents are multiplied by it after encoding and divided before decoding (pipeline side).
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f32,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    /// The file this config came from (for error messages).
    #[serde(skip)]
    pub origin: PathBuf,
}

fn default_image_channels() -> usize {
    3
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_act_fn() -> String {
    "silu".to_string()
}
fn default_sample_size() -> usize {
    32
}
fn default_scaling_factor() -> f32 {
    0.18215
}
fn default_true() -> bool {
    true
}

/// SD 1.5's `vae/config.json` (runwayml/stable-diffusion-v1-5), for single-file checkpoints.
pub const SD15_VAE_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": [
    "DownEncoderBlock2D",
    "DownEncoderBlock2D",
    "DownEncoderBlock2D",
    "DownEncoderBlock2D"
  ],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "up_block_types": [
    "UpDecoderBlock2D",
    "UpDecoderBlock2D",
    "UpDecoderBlock2D",
    "UpDecoderBlock2D"
  ]
}"#;

impl VaeConfig {
    /// Read and check a `vae/config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json(&read_config_text(path)?, path)
    }

    /// Parse and check config JSON; `origin` names it in errors.
    pub fn from_json(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let origin = origin.as_ref();
        let mut config: VaeConfig = parse_config(text, origin)?;
        config.origin = origin.to_path_buf();
        config.check()?;
        Ok(config)
    }

    /// SD 1.5's VAE.
    pub fn sd15() -> Result<Self> {
        Self::from_json(SD15_VAE_CONFIG, "<built-in SD 1.5 vae config>")
    }

    /// Number of resolution levels.
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Pixels per latent along each side: `2^(levels − 1)` (8 for SD 1.5).
    pub fn downscale_factor(&self) -> usize {
        level_scale(self.levels())
    }

    /// An error about `field` of this config.
    pub fn error(&self, field: &str, reason: impl Into<String>) -> sd_core::Error {
        config_error(&self.origin, field, reason)
    }

    /// Check that the fields describe a VAE this crate can build and fit together.
    pub fn check(&self) -> Result<()> {
        let levels = self.levels();
        check_levels(
            &self.origin,
            levels,
            &[
                ("down_block_types", self.down_block_types.len()),
                ("up_block_types", self.up_block_types.len()),
            ],
        )?;
        check_counts(
            &self.origin,
            &[
                ("in_channels", self.in_channels, MAX_WIDTH),
                ("out_channels", self.out_channels, MAX_WIDTH),
                ("layers_per_block", self.layers_per_block, MAX_REPEATS),
                ("latent_channels", self.latent_channels, MAX_WIDTH),
                ("norm_num_groups", self.norm_num_groups, MAX_WIDTH),
                ("sample_size", self.sample_size, MAX_WIDTH),
            ],
        )?;
        for &channels in &self.block_out_channels {
            check_counts(&self.origin, &[("block_out_channels", channels, MAX_WIDTH)])?;
        }
        let groups = self.norm_num_groups;
        if let Some(&c) = self
            .block_out_channels
            .iter()
            .find(|&&c| c == 0 || c % groups != 0)
        {
            return Err(self.error(
                "block_out_channels",
                format!("{c} channels do not split into norm_num_groups = {groups} groups"),
            ));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(self.error(
                "act_fn",
                format!(
                    "{:?} is not supported; SD 1.x VAEs use \"silu\"",
                    self.act_fn
                ),
            ));
        }
        check_positive(
            &self.origin,
            "scaling_factor",
            f64::from(self.scaling_factor),
        )
    }
}
