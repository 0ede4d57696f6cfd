//! The text encoder's `config.json` (transformers' `CLIPTextConfig`): the one source of every shape.

use std::path::Path;

use sd_core::config_file::{MAX_REPEATS, MAX_WIDTH, read_config};
use sd_core::{Error, Result, UnaryOp};
use serde::Deserialize;

/// The fields of `text_encoder/config.json` the model needs. Missing fields take transformers'
/// `CLIPTextConfig` defaults, as transformers itself does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    /// `quick_gelu` (OpenAI CLIP, SD 1.x) or `gelu` (exact, erf-based).
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for ClipTextConfig {
    /// transformers' `CLIPTextConfig()` defaults.
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipTextConfig {
    /// OpenAI CLIP ViT-L/14's text tower, SD 1.x's text encoder (the config single-file
    /// checkpoints imply).
    pub fn sd15() -> Self {
        ClipTextConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            ..ClipTextConfig::default()
        }
    }

    /// Read and check a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config: ClipTextConfig = read_config(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Check the fields fit together; `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let field_error = |field: &str, reason: String| Error::Config {
            path: path.to_path_buf(),
            field: field.into(),
            reason,
        };
        check_tower(
            &field_error,
            &[
                ("vocab_size", self.vocab_size, MAX_WIDTH),
                ("hidden_size", self.hidden_size, MAX_WIDTH),
                ("intermediate_size", self.intermediate_size, MAX_WIDTH),
                ("num_hidden_layers", self.num_hidden_layers, MAX_REPEATS),
                ("num_attention_heads", self.num_attention_heads, MAX_WIDTH),
                (
                    "max_position_embeddings",
                    self.max_position_embeddings,
                    MAX_WIDTH,
                ),
            ],
            (self.hidden_size, self.num_attention_heads),
            self.layer_norm_eps,
            &self.hidden_act,
        )?;
        if self.max_position_embeddings < 3 {
            return Err(field_error(
                "max_position_embeddings",
                format!(
                    "{} leaves no room for a token between start and end",
                    self.max_position_embeddings
                ),
            ));
        }
        Ok(())
    }

    /// The MLP activation as a backend op.
    pub fn activation(&self) -> Option<UnaryOp> {
        activation_named(&self.hidden_act)
    }

    /// The width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A config's `hidden_act` as a backend op: `quick_gelu` (OpenAI CLIP) or `gelu` (erf-based).
pub(crate) fn activation_named(name: &str) -> Option<UnaryOp> {
    match name {
        "quick_gelu" => Some(UnaryOp::QuickGelu),
        "gelu" => Some(UnaryOp::Gelu),
        _ => None,
    }
}

/// The checks both towers' configs share: positive sizes, heads that divide the width, a
/// positive layer-norm epsilon, an activation we have. `field_error` names the file.
pub(crate) fn check_tower(
    field_error: &dyn Fn(&str, String) -> Error,
    sizes: &[(&str, usize, usize)],
    (hidden_size, heads): (usize, usize),
    layer_norm_eps: f64,
    hidden_act: &str,
) -> Result<()> {
    // Each size in 1..=max before anything is built from it (sd_core::config_file's limits).
    for &(field, value, max) in sizes {
        if value == 0 {
            return Err(field_error(field, "must be positive".into()));
        }
        if value > max {
            return Err(field_error(
                field,
                format!("{value} is larger than the {max} this crate accepts"),
            ));
        }
    }
    if !hidden_size.is_multiple_of(heads) {
        return Err(field_error(
            "num_attention_heads",
            format!("{heads} heads do not divide hidden_size {hidden_size}"),
        ));
    }
    if !(layer_norm_eps.is_finite() && layer_norm_eps > 0.0) {
        return Err(field_error(
            "layer_norm_eps",
            format!("{layer_norm_eps} is not a positive finite number"),
        ));
    }
    if activation_named(hidden_act).is_none() {
        return Err(field_error(
            "hidden_act",
            format!("unsupported activation {hidden_act:?}, expected \"quick_gelu\" or \"gelu\""),
        ));
    }
    Ok(())
}
