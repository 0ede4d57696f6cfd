//! The CLIP vision transformer (transformers' `CLIPVisionModel`) over any [`Backend`]: what the
//! safety checker looks at images with.
//!
//! The image is cut into `patch_size`² patches by a strided convolution, a learned class token
//! is put in front, position embeddings are added, then a layer norm (`pre_layrnorm`, spelled so
//! in the checkpoint), the encoder layers the text tower also uses (`transformer.rs`, here
//! attending to every position), and `post_layernorm` on the class token: the pooled output.

use std::path::Path;

use sd_core::config_file::read_config;
use sd_core::nn::{Conv2d, Embedding, LayerNorm};
use sd_core::weights::Weights;
use sd_core::{Backend, Conv2dParams, Error, HostTensor, Result};
use serde::Deserialize;

use sd_core::config_file::{MAX_REPEATS, MAX_WIDTH};

use crate::config::{activation_named, check_tower};
use crate::transformer::{EncoderLayer, LayerShape};

/// transformers' `CLIPVisionConfig`: the fields the tower needs, missing ones at transformers'
/// defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    /// The side of the (square) images the position embeddings were trained for.
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    /// transformers' `CLIPVisionConfig()` defaults (ViT-B/32).
    fn default() -> Self {
        ClipVisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipVisionConfig {
    /// OpenAI CLIP ViT-L/14 at 224 pixels: the tower of SD 1.x's safety checker.
    pub fn vit_l14() -> Self {
        ClipVisionConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            patch_size: 14,
            ..ClipVisionConfig::default()
        }
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Check the fields fit together; `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let field_error = |field: &str, reason: String| Error::Config {
            path: path.to_path_buf(),
            field: format!("vision_config.{field}"),
            reason,
        };
        check_tower(
            &field_error,
            &[
                ("hidden_size", self.hidden_size, MAX_WIDTH),
                ("intermediate_size", self.intermediate_size, MAX_WIDTH),
                ("num_hidden_layers", self.num_hidden_layers, MAX_REPEATS),
                ("num_attention_heads", self.num_attention_heads, MAX_WIDTH),
                ("num_channels", self.num_channels, MAX_WIDTH),
                ("image_size", self.image_size, MAX_WIDTH),
                ("patch_size", self.patch_size, MAX_WIDTH),
            ],
            (self.hidden_size, self.num_attention_heads),
            self.layer_norm_eps,
            &self.hidden_act,
        )?;
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(field_error(
                "patch_size",
                format!(
                    "{} does not divide image_size {}",
                    self.patch_size, self.image_size
                ),
            ));
        }
        Ok(())
    }
}

/// A `CLIPConfig` file read for its vision half (the safety checker's `config.json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct ClipConfigFile {
    pub projection_dim: usize,
    pub vision_config: ClipVisionConfig,
}

impl Default for ClipConfigFile {
    fn default() -> Self {
        ClipConfigFile {
            projection_dim: 512,
            vision_config: ClipVisionConfig::default(),
        }
    }
}

impl ClipConfigFile {
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        let config: ClipConfigFile = read_config(path)?;
        config.vision_config.validate(path)?;
        if config.projection_dim == 0 {
            return Err(Error::Config {
                path: path.to_path_buf(),
                field: "projection_dim".into(),
                reason: "must be positive".into(),
            });
        }
        Ok(config)
    }
}

#[derive(Debug)]
struct Embeddings<B: Backend> {
    /// `[hidden]`, put in front of the patches.
    class_embedding: B::Tensor,
    patch_embedding: Conv2d<B>,
    position_embedding: Embedding<B>,
}

/// transformers' `CLIPVisionTransformer`: pixel values to the pooled (class-token) output.
#[derive(Debug)]
pub struct ClipVisionTransformer<B: Backend> {
    config: ClipVisionConfig,
    embeddings: Embeddings<B>,
    pre_layrnorm: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
    post_layernorm: LayerNorm<B>,
}

impl<B: Backend> ClipVisionTransformer<B> {
    /// Upload the tower under `weights` (the module holding `embeddings`, `pre_layrnorm`,
    /// `encoder`, `post_layernorm`). Every tensor is checked against the shape `config` implies.
    pub fn load(backend: &B, weights: &Weights<'_>, config: ClipVisionConfig) -> Result<Self> {
        config.validate(Path::new("vision_config"))?;
        let activation = activation_named(&config.hidden_act).ok_or_else(|| {
            Error::invalid_argument("hidden_act", format!("{:?}", config.hidden_act))
        })?;
        let dim = config.hidden_size;
        let eps = config.layer_norm_eps as f32;
        let e = weights.at("embeddings");
        let patches = config.grid() * config.grid();
        let patch = config.patch_size;
        let embeddings = Embeddings {
            class_embedding: backend.upload(&e.get_shaped("class_embedding", &[dim])?)?,
            patch_embedding: Conv2d::load_without_bias(
                backend,
                &e.at("patch_embedding"),
                config.num_channels,
                dim,
                patch,
                Conv2dParams {
                    stride: patch,
                    padding: 0,
                },
            )?,
            position_embedding: Embedding::load(
                backend,
                &e.at("position_embedding"),
                patches + 1,
                dim,
            )?,
        };
        let shape = LayerShape {
            hidden: dim,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layer_norm_eps: eps,
            activation,
            causal: false,
        };
        let layers = EncoderLayer::load_all(
            backend,
            &weights.at("encoder.layers"),
            config.num_hidden_layers,
            &shape,
        )?;
        Ok(ClipVisionTransformer {
            embeddings,
            pre_layrnorm: LayerNorm::load(backend, &weights.at("pre_layrnorm"), dim, eps)?,
            layers,
            post_layernorm: LayerNorm::load(backend, &weights.at("post_layernorm"), dim, eps)?,
            config,
        })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// `pixel_values [n, channels, image_size, image_size]` → the pooled output `[n, hidden]`
    /// (`CLIPVisionModel(...)[1]`).
    pub fn pooled(&self, backend: &B, pixel_values: &HostTensor) -> Result<B::Tensor> {
        let side = self.config.image_size;
        let &[n, channels, h, w] = pixel_values.shape() else {
            return Err(self.bad_input(pixel_values));
        };
        if n == 0 || channels != self.config.num_channels || h != side || w != side {
            return Err(self.bad_input(pixel_values));
        }
        let b = backend;
        let dim = self.config.hidden_size;
        let patches = self.config.grid() * self.config.grid();
        let grid = self
            .embeddings
            .patch_embedding
            .forward(b, &b.upload(pixel_values)?)?;
        let grid = b.reshape(&grid, &[n, dim, patches])?;
        let patch_tokens = b.permute(&grid, &[0, 2, 1])?;
        let class = b.reshape(&self.embeddings.class_embedding, &[1, 1, dim])?;
        let class_rows: Vec<&B::Tensor> = std::iter::repeat_n(&class, n).collect();
        let class_tokens = b.concat(&class_rows, 0)?;
        let tokens = b.concat(&[&class_tokens, &patch_tokens], 1)?;
        let positions: Vec<u32> = (0..=patches as u32).collect();
        let positions =
            self.embeddings
                .position_embedding
                .forward(b, &positions, &[1, patches + 1])?;
        let mut x = self.pre_layrnorm.forward(b, &b.add(&tokens, &positions)?)?;
        for layer in &self.layers {
            x = layer.forward(b, &x)?;
        }
        let class_out = b.reshape(&b.narrow(&x, 1, 0, 1)?, &[n, dim])?;
        self.post_layernorm.forward(b, &class_out)
    }

    fn bad_input(&self, pixel_values: &HostTensor) -> Error {
        let side = self.config.image_size;
        Error::shape(
            "CLIP vision input",
            format!(
                "expected [n, {}, {side}, {side}], found {:?}",
                self.config.num_channels,
                pixel_values.shape()
            ),
        )
    }
}
