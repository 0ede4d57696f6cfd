//! The VAE's blocks: `DownEncoderBlock2D`, `UpDecoderBlock2D` and the attention middle block
//! `UNetMidBlock2D`, built from the layers sd-unet shares.

use sd_core::nn::{
    Attention, AttentionShape, Downsample2D, GroupNorm, ResnetBlock2D, ResnetShape, Upsample2D,
};
use sd_core::weights::Weights;
use sd_core::{Backend, Error, Result, TensorInfo};

use crate::config::VaeConfig;

/// diffusers builds every VAE norm with this epsilon, whatever the config says.
pub(crate) const NORM_EPS: f32 = 1e-6;

/// A VAE resnet: no time embedding, the config's groups, `NORM_EPS`.
pub(crate) fn resnet_shape(
    config: &VaeConfig,
    in_channels: usize,
    out_channels: usize,
) -> ResnetShape {
    ResnetShape {
        in_channels,
        out_channels,
        temb_channels: None,
        groups: config.norm_num_groups,
        eps: NORM_EPS,
        output_scale_factor: 1.0,
    }
}

fn load_resnets<B: Backend>(
    backend: &B,
    weights: &Weights<'_>,
    config: &VaeConfig,
    count: usize,
    in_channels: usize,
    out_channels: usize,
) -> Result<Vec<ResnetBlock2D<B>>> {
    (0..count)
        .map(|i| {
            let input = if i == 0 { in_channels } else { out_channels };
            let shape = resnet_shape(config, input, out_channels);
            ResnetBlock2D::load(backend, &weights.at("resnets").at(i), shape)
        })
        .collect()
}

/// Resnets, then (but on the last level) a stride-2 conv after a bottom/right zero pad.
#[derive(Debug)]
pub struct DownEncoderBlock2D<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    downsamplers: Option<Downsample2D<B>>,
}

impl<B: Backend> DownEncoderBlock2D<B> {
    /// Encoder level `level` (weights `encoder.down_blocks.{level}`).
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        config: &VaeConfig,
        level: usize,
    ) -> Result<Self> {
        let channels = &config.block_out_channels;
        let (input, out) = (channels[level.saturating_sub(1)], channels[level]);
        let resnets = load_resnets(
            backend,
            weights,
            config,
            config.layers_per_block,
            input,
            out,
        )?;
        let downsamplers = if level + 1 < config.levels() {
            // Padding 0 selects diffusers' asymmetric (bottom/right) pad.
            Some(Downsample2D::load(
                backend,
                &weights.at("downsamplers.0"),
                out,
                out,
                0,
            )?)
        } else {
            None
        };
        Ok(DownEncoderBlock2D {
            resnets,
            downsamplers,
        })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let mut x = x.clone();
        for resnet in &self.resnets {
            x = resnet.forward(backend, &x, None)?;
        }
        match &self.downsamplers {
            Some(down) => down.forward(backend, &x),
            None => Ok(x),
        }
    }
}

/// `layers_per_block + 1` resnets, then (but on the last level) a nearest-2× upsampler.
#[derive(Debug)]
pub struct UpDecoderBlock2D<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    upsamplers: Option<Upsample2D<B>>,
}

impl<B: Backend> UpDecoderBlock2D<B> {
    /// Decoder block `index` (weights `decoder.up_blocks.{index}`), at encoder level
    /// `levels − 1 − index`.
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        config: &VaeConfig,
        index: usize,
    ) -> Result<Self> {
        let levels = config.levels();
        let channels = &config.block_out_channels;
        let level = levels - 1 - index;
        let (input, out) = (channels[(level + 1).min(levels - 1)], channels[level]);
        let count = config.layers_per_block + 1;
        let resnets = load_resnets(backend, weights, config, count, input, out)?;
        let upsamplers = if index + 1 < levels {
            Some(Upsample2D::load(
                backend,
                &weights.at("upsamplers.0"),
                out,
                out,
            )?)
        } else {
            None
        };
        Ok(UpDecoderBlock2D {
            resnets,
            upsamplers,
        })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let mut x = x.clone();
        for resnet in &self.resnets {
            x = resnet.forward(backend, &x, None)?;
        }
        match &self.upsamplers {
            Some(up) => up.forward(backend, &x, None),
            None => Ok(x),
        }
    }
}

/// Resnet, single-head self-attention over the `h·w` positions, resnet (the attention is left
/// out with `mid_block_add_attention: false`).
#[derive(Debug)]
pub struct UNetMidBlock2D<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attentions: Vec<SpatialSelfAttention<B>>,
}

impl<B: Backend> UNetMidBlock2D<B> {
    /// The `mid_block` of the encoder or decoder.
    pub fn load(backend: &B, weights: &Weights<'_>, config: &VaeConfig) -> Result<Self> {
        let channels = config.block_out_channels[config.levels() - 1];
        let resnets = load_resnets(backend, weights, config, 2, channels, channels)?;
        let attentions = if config.mid_block_add_attention {
            vec![SpatialSelfAttention::load(
                backend,
                &weights.at("attentions.0"),
                config,
                channels,
            )?]
        } else {
            Vec::new()
        };
        Ok(UNetMidBlock2D {
            resnets,
            attentions,
        })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let (first, rest) = self
            .resnets
            .split_first()
            .ok_or_else(|| Error::shape("mid_block", "no resnets"))?;
        let mut x = first.forward(backend, x, None)?;
        for attention in &self.attentions {
            x = attention.forward(backend, &x)?;
        }
        for resnet in rest {
            x = resnet.forward(backend, &x, None)?;
        }
        Ok(x)
    }
}

/// diffusers' `Attention` as the VAE configures it: group norm, one head as wide as the
/// channels with biased q/k/v, and the input added back (`rescale_output_factor` is 1).
#[derive(Debug)]
pub struct SpatialSelfAttention<B: Backend> {
    group_norm: GroupNorm<B>,
    attention: Attention<B>,
}

impl<B: Backend> SpatialSelfAttention<B> {
    fn load(
        backend: &B,
        weights: &Weights<'_>,
        config: &VaeConfig,
        channels: usize,
    ) -> Result<Self> {
        let shape = AttentionShape {
            query_dim: channels,
            context_dim: channels,
            heads: 1,
            head_dim: channels,
            qkv_bias: true,
        };
        Ok(SpatialSelfAttention {
            group_norm: GroupNorm::load(
                backend,
                &weights.at("group_norm"),
                config.norm_num_groups,
                channels,
                NORM_EPS,
            )?,
            attention: Attention::load(backend, weights, shape)?,
        })
    }

    /// `x [n, c, h, w]` → `[n, c, h, w]`; the backend attends blockwise, so the `hw × hw`
    /// score matrix (4096² at 512², 16384² at 1024²) is never held whole.
    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let &[n, c, h, w] = x.shape() else {
            return Err(Error::shape(
                "vae attention",
                format!("expected [n, c, h, w], found {:?}", x.shape()),
            ));
        };
        let normed = self.group_norm.forward(backend, x)?;
        let tokens = backend.reshape(&backend.permute(&normed, &[0, 2, 3, 1])?, &[n, h * w, c])?;
        drop(normed);
        let mixed = self.attention.forward(backend, &tokens, None)?;
        drop(tokens);
        let map = backend.permute(&backend.reshape(&mixed, &[n, h, w, c])?, &[0, 3, 1, 2])?;
        drop(mixed);
        backend.add(&map, x)
    }
}
