//! The UNet's down, middle and up blocks (diffusers' `CrossAttnDownBlock2D`/`DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D`). A block without cross-attention
//! is the same structure with no `attentions`.

use sd_core::weights::Weights;
use sd_core::{Backend, Error, Result, TensorInfo};

use crate::config::UNetConfig;
use crate::transformer::{Transformer2DModel, TransformerShape};
use sd_core::nn::{Downsample2D, ResnetBlock2D, ResnetShape, Upsample2D};

/// What every block's forward pass needs besides its input.
#[derive(Debug)]
pub struct BlockInputs<'a, B: Backend> {
    /// `SiLU(time embedding)`, `[n, time_embed_dim]`.
    pub temb_act: &'a B::Tensor,
    /// The text conditioning, `[n, seq, cross_attention_dim]`.
    pub context: &'a B::Tensor,
}

// Two shared references: copyable whatever the backend (a derive would require `B: Copy`).
impl<B: Backend> Clone for BlockInputs<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for BlockInputs<'_, B> {}

/// A resnet shaped by the UNet config (the blocks differ only in channels and output scale).
fn resnet_shape(config: &UNetConfig, in_channels: usize, out_channels: usize) -> ResnetShape {
    ResnetShape {
        in_channels,
        out_channels,
        temb_channels: Some(config.time_embed_dim()),
        groups: config.norm_num_groups,
        eps: config.norm_eps,
        // diffusers passes resnet_out_scale_factor only to block types SD 1.x does not use.
        output_scale_factor: 1.0,
    }
}

/// The Transformer2D of a block at down-block `level` with `channels` channels.
fn transformer_shape(
    config: &UNetConfig,
    level: usize,
    channels: usize,
    only_cross_attention: bool,
) -> TransformerShape {
    TransformerShape {
        channels,
        heads: config.attention_head_dim.get(level),
        layers: config.transformer_layers_per_block.get(level),
        cross_attention_dim: config.cross_attention_dim.get(level),
        groups: config.norm_num_groups,
        only_cross_attention,
    }
}

/// Resnets (each followed by a Transformer2D in cross-attention blocks), then a stride-2
/// downsampler on every level but the last. Every output is kept as a skip for the up path.
#[derive(Debug)]
pub struct DownBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attentions: Vec<Transformer2DModel<B>>,
    downsamplers: Option<Downsample2D<B>>,
}

impl<B: Backend> DownBlock<B> {
    /// Down block `level` (its weights are `down_blocks.{level}`).
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        config: &UNetConfig,
        level: usize,
    ) -> Result<Self> {
        let channels = &config.block_out_channels;
        let out = channels[level];
        let mut input = channels[level.saturating_sub(1)];
        let layers = config.layers_per_block.get(level);
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            resnets.push(ResnetBlock2D::load(
                backend,
                &weights.at("resnets").at(i),
                resnet_shape(config, input, out),
            )?);
            input = out;
            if config.down_block_types[level].has_cross_attention() {
                let only_cross = config.only_cross_attention.get(level);
                attentions.push(Transformer2DModel::load(
                    backend,
                    &weights.at("attentions").at(i),
                    transformer_shape(config, level, out, only_cross),
                )?);
            }
        }
        let downsamplers = if level + 1 < config.levels() {
            Some(Downsample2D::load(
                backend,
                &weights.at("downsamplers.0"),
                out,
                out,
                config.downsample_padding,
            )?)
        } else {
            None
        };
        Ok(DownBlock {
            resnets,
            attentions,
            downsamplers,
        })
    }

    /// Run the block on `x`, pushing each layer's output (and the downsampled one) to `skips`.
    pub fn forward(
        &self,
        backend: &B,
        mut x: B::Tensor,
        inputs: BlockInputs<'_, B>,
        skips: &mut Vec<B::Tensor>,
    ) -> Result<B::Tensor> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(backend, &x, Some(inputs.temb_act))?;
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(backend, &x, inputs.context)?;
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsamplers {
            x = down.forward(backend, &x)?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}

/// Resnet, then (Transformer2D, resnet) per transformer layer group, at the lowest resolution.
#[derive(Debug)]
pub struct MidBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attentions: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> MidBlock<B> {
    /// The `mid_block` (`UNetMidBlock2DCrossAttn`, one attention layer group).
    pub fn load(backend: &B, weights: &Weights<'_>, config: &UNetConfig) -> Result<Self> {
        let level = config.levels() - 1;
        let channels = config.block_out_channels[level];
        let shape = ResnetShape {
            output_scale_factor: config.mid_block_scale_factor,
            ..resnet_shape(config, channels, channels)
        };
        let resnet = |i: usize| ResnetBlock2D::load(backend, &weights.at("resnets").at(i), shape);
        // diffusers' cross-attention middle block ignores only_cross_attention.
        let attention = Transformer2DModel::load(
            backend,
            &weights.at("attentions.0"),
            transformer_shape(config, level, channels, false),
        )?;
        Ok(MidBlock {
            resnets: vec![resnet(0)?, resnet(1)?],
            attentions: vec![attention],
        })
    }

    pub fn forward(
        &self,
        backend: &B,
        x: &B::Tensor,
        inputs: BlockInputs<'_, B>,
    ) -> Result<B::Tensor> {
        let (first, rest) = self
            .resnets
            .split_first()
            .ok_or_else(|| Error::shape("mid_block", "no resnets"))?;
        let mut x = first.forward(backend, x, Some(inputs.temb_act))?;
        for (attention, resnet) in self.attentions.iter().zip(rest) {
            x = attention.forward(backend, &x, inputs.context)?;
            x = resnet.forward(backend, &x, Some(inputs.temb_act))?;
        }
        Ok(x)
    }
}

/// `layers_per_block + 1` resnets, each over its input concatenated (along channels) with the
/// latest unused skip, each followed by a Transformer2D in cross-attention blocks; then a
/// nearest-2× upsampler on every level but the last.
#[derive(Debug)]
pub struct UpBlock<B: Backend> {
    resnets: Vec<ResnetBlock2D<B>>,
    attentions: Vec<Transformer2DModel<B>>,
    upsamplers: Option<Upsample2D<B>>,
}

impl<B: Backend> UpBlock<B> {
    /// Up block `index` (its weights are `up_blocks.{index}`), mirroring down block
    /// `levels − 1 − index`.
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        config: &UNetConfig,
        index: usize,
    ) -> Result<Self> {
        let levels = config.levels();
        let level = levels - 1 - index;
        let channels = &config.block_out_channels;
        let out = channels[level];
        // The previous up block's output (the middle block's for the first).
        let previous = channels[(level + 1).min(levels - 1)];
        // The skip of this level's first layer comes from the level above (its downsampler).
        let from_above = channels[level.saturating_sub(1)];
        let layers = config.layers_per_block.get(level) + 1;
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let input = if i == 0 { previous } else { out };
            let skip = if i + 1 == layers { from_above } else { out };
            resnets.push(ResnetBlock2D::load(
                backend,
                &weights.at("resnets").at(i),
                resnet_shape(config, input + skip, out),
            )?);
            if config.up_block_types[index].has_cross_attention() {
                let only_cross = config.only_cross_attention.get(level);
                attentions.push(Transformer2DModel::load(
                    backend,
                    &weights.at("attentions").at(i),
                    transformer_shape(config, level, out, only_cross),
                )?);
            }
        }
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
        Ok(UpBlock {
            resnets,
            attentions,
            upsamplers,
        })
    }

    /// Run the block on `x`, consuming skips from the end of `skips` (each freed once used).
    pub fn forward(
        &self,
        backend: &B,
        mut x: B::Tensor,
        inputs: BlockInputs<'_, B>,
        skips: &mut Vec<B::Tensor>,
    ) -> Result<B::Tensor> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::shape("up_blocks", "ran out of skip connections"))?;
            let joined = backend.concat(&[&x, &skip], 1)?;
            drop(skip);
            x = resnet.forward(backend, &joined, Some(inputs.temb_act))?;
            drop(joined);
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(backend, &x, inputs.context)?;
            }
        }
        if let Some(up) = &self.upsamplers {
            // The next level's first skip fixes the size (odd latent sides round up on the way down).
            let target = skips.last().map(|s| (s.shape()[2], s.shape()[3]));
            x = up.forward(backend, &x, target)?;
        }
        Ok(x)
    }
}
