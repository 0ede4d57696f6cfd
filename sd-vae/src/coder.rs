//! The VAE's `Encoder` (image → latent moments) and `Decoder` (latents → image).

use sd_core::nn::{Conv2d, GroupNorm};
use sd_core::weights::Weights;
use sd_core::{Backend, Result};

use crate::blocks::{DownEncoderBlock2D, NORM_EPS, UNetMidBlock2D, UpDecoderBlock2D};
use crate::config::VaeConfig;

/// `conv_in`, down blocks, middle block, `conv_out(SiLU(conv_norm_out(x)))` giving the mean and
/// log-variance stacked along channels (`2 · latent_channels`).
#[derive(Debug)]
pub struct Encoder<B: Backend> {
    conv_in: Conv2d<B>,
    down_blocks: Vec<DownEncoderBlock2D<B>>,
    mid_block: UNetMidBlock2D<B>,
    conv_norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    /// `weights` is the `encoder` scope.
    pub fn load(backend: &B, weights: &Weights<'_>, config: &VaeConfig) -> Result<Self> {
        let channels = &config.block_out_channels;
        let (first, last) = (channels[0], channels[config.levels() - 1]);
        let down_blocks = (0..config.levels())
            .map(|level| {
                DownEncoderBlock2D::load(
                    backend,
                    &weights.at("down_blocks").at(level),
                    config,
                    level,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Encoder {
            conv_in: Conv2d::load_same(
                backend,
                &weights.at("conv_in"),
                config.in_channels,
                first,
                3,
            )?,
            down_blocks,
            mid_block: UNetMidBlock2D::load(backend, &weights.at("mid_block"), config)?,
            conv_norm_out: GroupNorm::load(
                backend,
                &weights.at("conv_norm_out"),
                config.norm_num_groups,
                last,
                NORM_EPS,
            )?,
            conv_out: Conv2d::load_same(
                backend,
                &weights.at("conv_out"),
                last,
                2 * config.latent_channels,
                3,
            )?,
        })
    }

    /// `image [n, in_channels, H, W]` → moments `[n, 2·latent_channels, H/f, W/f]`.
    pub fn forward(&self, backend: &B, image: &B::Tensor) -> Result<B::Tensor> {
        let mut x = self.conv_in.forward(backend, image)?;
        for block in &self.down_blocks {
            x = block.forward(backend, &x)?;
        }
        x = self.mid_block.forward(backend, &x)?;
        x = self.conv_norm_out.forward_silu(backend, &x)?;
        self.conv_out.forward(backend, &x)
    }
}

/// `conv_in`, middle block, up blocks, `conv_out(SiLU(conv_norm_out(x)))`.
#[derive(Debug)]
pub struct Decoder<B: Backend> {
    conv_in: Conv2d<B>,
    mid_block: UNetMidBlock2D<B>,
    up_blocks: Vec<UpDecoderBlock2D<B>>,
    conv_norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    /// `weights` is the `decoder` scope.
    pub fn load(backend: &B, weights: &Weights<'_>, config: &VaeConfig) -> Result<Self> {
        let channels = &config.block_out_channels;
        let (first, last) = (channels[0], channels[config.levels() - 1]);
        let up_blocks = (0..config.levels())
            .map(|index| {
                UpDecoderBlock2D::load(backend, &weights.at("up_blocks").at(index), config, index)
            })
            .collect::<Result<_>>()?;
        Ok(Decoder {
            conv_in: Conv2d::load_same(
                backend,
                &weights.at("conv_in"),
                config.latent_channels,
                last,
                3,
            )?,
            mid_block: UNetMidBlock2D::load(backend, &weights.at("mid_block"), config)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                backend,
                &weights.at("conv_norm_out"),
                config.norm_num_groups,
                first,
                NORM_EPS,
            )?,
            conv_out: Conv2d::load_same(
                backend,
                &weights.at("conv_out"),
                first,
                config.out_channels,
                3,
            )?,
        })
    }

    /// `latents [n, latent_channels, h, w]` (after `post_quant_conv`) → `[n, out_channels, h·f, w·f]`.
    pub fn forward(&self, backend: &B, latents: &B::Tensor) -> Result<B::Tensor> {
        let mut x = self.conv_in.forward(backend, latents)?;
        x = self.mid_block.forward(backend, &x)?;
        for block in &self.up_blocks {
            x = block.forward(backend, &x)?;
        }
        x = self.conv_norm_out.forward_silu(backend, &x)?;
        self.conv_out.forward(backend, &x)
    }
}
