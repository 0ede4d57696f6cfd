//! `unet/config.json` (diffusers' `UNet2DConditionModel` config): the one source of every shape.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use sd_core::Result;

use sd_core::config_file::{
    MAX_REPEATS, MAX_WIDTH, check_counts, check_finite, check_levels, check_positive, config_error,
    level_scale, parse_config, read_config_text,
};

/// The down blocks this crate builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DownBlockType {
    /// Resnets each followed by a Transformer2D, then a downsampler.
    CrossAttnDownBlock2D,
    /// Resnets, then a downsampler.
    DownBlock2D,
}

/// The up blocks this crate builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpBlockType {
    /// Resnets (over the input concatenated with a skip) each followed by a Transformer2D.
    CrossAttnUpBlock2D,
    /// Resnets over the input concatenated with a skip.
    UpBlock2D,
}

/// The middle blocks this crate builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MidBlockType {
    /// Resnet, then (Transformer2D, resnet) per layer.
    UNetMidBlock2DCrossAttn,
}

impl DownBlockType {
    pub fn has_cross_attention(self) -> bool {
        self == DownBlockType::CrossAttnDownBlock2D
    }
}

impl UpBlockType {
    pub fn has_cross_attention(self) -> bool {
        self == UpBlockType::CrossAttnUpBlock2D
    }
}

/// A setting given once for every block or as one value per down block.
#[derive(Debug, Clone)]
pub enum PerBlock<T> {
    All(T),
    Each(Vec<T>),
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for PerBlock<T> {
    // By hand rather than `#[serde(untagged)]`, whose error does not say what was expected.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        if value.is_array() {
            serde_json::from_value(value).map(PerBlock::Each)
        } else {
            serde_json::from_value(value).map(PerBlock::All)
        }
        .map_err(|e| {
            serde::de::Error::custom(format!("{e} (a value, or a list of one value per block)"))
        })
    }
}

impl<T: Copy + Default> PerBlock<T> {
    /// The value for down block `i`. [`UNetConfig::check`] makes sure a list has one value
    /// per block; an unchecked short list repeats its last value (or gives the default).
    pub fn get(&self, i: usize) -> T {
        match self {
            PerBlock::All(v) => *v,
            PerBlock::Each(vs) => vs.get(i).or(vs.last()).copied().unwrap_or_default(),
        }
    }

    fn len(&self) -> Option<usize> {
        match self {
            PerBlock::All(_) => None,
            PerBlock::Each(vs) => Some(vs.len()),
        }
    }
}

/// The fields of a `UNet2DConditionModel` config.json that shape SD 1.x UNets.
///
/// Missing optional fields take diffusers' defaults; the shape-defining ones are required.
/// Fields selecting architectures this crate does not build (class or added embeddings,
/// scale-shift time conditioning, Fourier timesteps, …) must be absent or at their default.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<DownBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    /// `null` means no middle block.
    #[serde(default = "default_mid_block_type")]
    pub mid_block_type: Option<MidBlockType>,
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "default_transformer_layers")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Read as the number of attention heads, as diffusers does: SD 1.5's `8` means 8 heads of
    /// `channels / 8` features (the name is a historical mistake kept for compatibility).
    pub attention_head_dim: PerBlock<usize>,
    /// diffusers refuses configs that set it; so do we.
    #[serde(default)]
    pub num_attention_heads: Option<Value>,
    pub cross_attention_dim: PerBlock<usize>,
    /// Per down block (mirrored for the up blocks); the middle block never has it.
    #[serde(default = "default_only_cross_attention")]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Softmax in f32 under f16 compute; the attention op already accumulates in f32.
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f32,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f32,
    #[serde(default = "default_downsample_padding")]
    pub downsample_padding: usize,
    #[serde(default = "default_one")]
    pub mid_block_scale_factor: f32,
    /// `2·x − 1` on the input when set.
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_kernel")]
    pub conv_in_kernel: usize,
    #[serde(default = "default_kernel")]
    pub conv_out_kernel: usize,
    /// Width of the time embedding; `4 · block_out_channels[0]` when absent.
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    /// Everything else in the file; fields selecting other architectures must be off.
    #[serde(flatten)]
    pub other: Map<String, Value>,
    /// The file this config came from (for error messages).
    #[serde(skip)]
    pub origin: PathBuf,
}

/// The value of an architecture-selecting field that means "off" (the plain SD 1.x UNet).
#[derive(Debug, Clone, Copy)]
enum Off {
    False,
    Text(&'static str),
}

impl Off {
    /// `null` always counts as off; otherwise the value must be the one listed.
    fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::Null) => true,
            (Off::False, Value::Bool(b)) => !b,
            (Off::Text(off), Value::String(s)) => s == off,
            _ => false,
        }
    }
}

/// Fields whose other values select architectures this crate does not build, with the value
/// that means "off" (`null` only, where `None`).
const UNSUPPORTED_FIELDS: [(&str, Option<Off>); 15] = [
    ("time_embedding_type", Some(Off::Text("positional"))),
    ("resnet_time_scale_shift", Some(Off::Text("default"))),
    ("class_embed_type", None),
    ("num_class_embeds", None),
    ("addition_embed_type", None),
    ("encoder_hid_dim_type", None),
    ("encoder_hid_dim", None),
    ("time_cond_proj_dim", None),
    ("cross_attention_norm", None),
    ("dual_cross_attention", Some(Off::False)),
    ("attention_type", Some(Off::Text("default"))),
    ("timestep_post_act", None),
    ("time_embedding_act_fn", None),
    ("class_embeddings_concat", Some(Off::False)),
    ("reverse_transformer_layers_per_block", None),
];

fn default_mid_block_type() -> Option<MidBlockType> {
    Some(MidBlockType::UNetMidBlock2DCrossAttn)
}
fn default_transformer_layers() -> PerBlock<usize> {
    PerBlock::All(1)
}
fn default_only_cross_attention() -> PerBlock<bool> {
    PerBlock::All(false)
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_norm_eps() -> f32 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_downsample_padding() -> usize {
    1
}
fn default_one() -> f32 {
    1.0
}
fn default_kernel() -> usize {
    3
}
fn default_act_fn() -> String {
    "silu".to_string()
}

/// The widest convolution kernel a config may ask for (SD-family UNets use 1 to 7).
const MAX_KERNEL: usize = 31;

/// SD 1.5's `unet/config.json` (runwayml/stable-diffusion-v1-5), for single-file checkpoints.
pub const SD15_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": [
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "DownBlock2D"
  ],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": [
    "UpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D"
  ]
}"#;

impl UNetConfig {
    /// Read and check a `unet/config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json(&read_config_text(path)?, path)
    }

    /// Parse and check config JSON; `origin` names it in errors.
    pub fn from_json(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let origin = origin.as_ref();
        let mut config: UNetConfig = parse_config(text, origin)?;
        config.origin = origin.to_path_buf();
        config.check()?;
        Ok(config)
    }

    /// SD 1.5's UNet with `in_channels` inputs (4, or 9 for inpainting checkpoints).
    pub fn sd15(in_channels: usize) -> Result<Self> {
        let mut config = Self::from_json(SD15_UNET_CONFIG, "<built-in SD 1.5 unet config>")?;
        config.in_channels = in_channels;
        config.check()?;
        Ok(config)
    }

    /// Number of resolution levels (down blocks).
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Latent sides must be multiples of this: each level but the last halves them.
    pub fn spatial_multiple(&self) -> usize {
        level_scale(self.levels())
    }

    /// Width of the sinusoidal timestep features (`block_out_channels[0]`).
    pub fn timestep_features(&self) -> usize {
        self.block_out_channels[0]
    }

    /// Width of the time embedding the resnets receive.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels[0])
    }

    /// An error about `field` of this config.
    pub fn error(&self, field: &str, reason: impl Into<String>) -> sd_core::Error {
        config_error(&self.origin, field, reason)
    }

    /// Check that the fields describe a UNet this crate can build and fit together.
    pub fn check(&self) -> Result<()> {
        self.check_supported()?;
        let levels = self.levels();
        check_levels(
            &self.origin,
            levels,
            &[
                ("down_block_types", self.down_block_types.len()),
                ("up_block_types", self.up_block_types.len()),
            ],
        )?;
        for (field, len) in [
            ("layers_per_block", self.layers_per_block.len()),
            (
                "transformer_layers_per_block",
                self.transformer_layers_per_block.len(),
            ),
            ("attention_head_dim", self.attention_head_dim.len()),
            ("cross_attention_dim", self.cross_attention_dim.len()),
            ("only_cross_attention", self.only_cross_attention.len()),
        ] {
            if len.is_some_and(|len| len != levels) {
                return Err(self.error(
                    field,
                    format!("lists {} values for {levels} blocks", len.unwrap_or(0)),
                ));
            }
        }
        check_counts(
            &self.origin,
            &[
                ("in_channels", self.in_channels, MAX_WIDTH),
                ("out_channels", self.out_channels, MAX_WIDTH),
                ("norm_num_groups", self.norm_num_groups, MAX_WIDTH),
                ("conv_in_kernel", self.conv_in_kernel, MAX_KERNEL),
                ("conv_out_kernel", self.conv_out_kernel, MAX_KERNEL),
                (
                    "time_embedding_dim",
                    self.time_embedding_dim.unwrap_or(1),
                    MAX_WIDTH,
                ),
            ],
        )?;
        for &channels in &self.block_out_channels {
            check_counts(&self.origin, &[("block_out_channels", channels, MAX_WIDTH)])?;
        }
        if self.downsample_padding > MAX_KERNEL {
            return Err(self.error(
                "downsample_padding",
                format!("{} is larger than {MAX_KERNEL}", self.downsample_padding),
            ));
        }
        check_positive(&self.origin, "norm_eps", f64::from(self.norm_eps))?;
        check_finite(&self.origin, "freq_shift", f64::from(self.freq_shift))?;
        check_finite(
            &self.origin,
            "mid_block_scale_factor",
            f64::from(self.mid_block_scale_factor),
        )?;
        for (field, kernel) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if kernel % 2 == 0 {
                return Err(self.error(field, format!("{kernel} is not an odd kernel size")));
            }
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
        if !self.timestep_features().is_multiple_of(2) {
            return Err(self.error(
                "block_out_channels",
                format!(
                    "the timestep sinusoid is block_out_channels[0] = {} wide and must be even",
                    self.timestep_features()
                ),
            ));
        }
        for i in 0..levels {
            check_counts(
                &self.origin,
                &[
                    (
                        "layers_per_block",
                        self.layers_per_block.get(i),
                        MAX_REPEATS,
                    ),
                    (
                        "transformer_layers_per_block",
                        self.transformer_layers_per_block.get(i),
                        MAX_REPEATS,
                    ),
                    (
                        "cross_attention_dim",
                        self.cross_attention_dim.get(i),
                        MAX_WIDTH,
                    ),
                    (
                        "attention_head_dim",
                        self.attention_head_dim.get(i),
                        MAX_WIDTH,
                    ),
                ],
            )?;
        }
        self.check_heads()
    }

    /// Every block with attention must split its channels into whole heads.
    fn check_heads(&self) -> Result<()> {
        let levels = self.levels();
        let mut with_attention = Vec::new();
        for (i, kind) in self.down_block_types.iter().enumerate() {
            if kind.has_cross_attention() {
                with_attention.push((self.block_out_channels[i], self.attention_head_dim.get(i)));
            }
        }
        if self.mid_block_type.is_some() {
            with_attention.push((
                self.block_out_channels[levels - 1],
                self.attention_head_dim.get(levels - 1),
            ));
        }
        for (i, kind) in self.up_block_types.iter().enumerate() {
            if kind.has_cross_attention() {
                with_attention.push((
                    self.block_out_channels[levels - 1 - i],
                    self.attention_head_dim.get(levels - 1 - i),
                ));
            }
        }
        for (channels, heads) in with_attention {
            if heads == 0 || channels % heads != 0 {
                return Err(self.error(
                    "attention_head_dim",
                    format!(
                        "{channels} channels do not split into {heads} attention heads \
                         (diffusers reads attention_head_dim as the number of heads)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_supported(&self) -> Result<()> {
        if self
            .num_attention_heads
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return Err(self.error(
                "num_attention_heads",
                "is not supported (diffusers refuses it too); set attention_head_dim",
            ));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(self.error(
                "act_fn",
                format!(
                    "{:?} is not supported; SD 1.x UNets use \"silu\"",
                    self.act_fn
                ),
            ));
        }
        for (field, off) in UNSUPPORTED_FIELDS {
            let Some(value) = self.other.get(field) else {
                continue;
            };
            let accepted = match off {
                Some(off) => off.accepts(value),
                None => value.is_null(),
            };
            if !accepted {
                return Err(self.error(
                    field,
                    format!("{value} selects an architecture this crate does not build"),
                ));
            }
        }
        Ok(())
    }
}
