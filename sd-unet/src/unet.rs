//! `UNet2DConditionModel`: the SD 1.x denoiser.

use sd_core::weights::{WeightStore, Weights};
use sd_core::{Backend, Denoiser, Error, HostTensor, Result, TensorInfo};

use crate::blocks::{BlockInputs, DownBlock, MidBlock, UpBlock};
use crate::config::UNetConfig;
use crate::time_embedding::{TimestepEmbedding, timestep_features};
use sd_core::nn::{Conv2d, GroupNorm};

/// The UNet: `conv_in`, down blocks (keeping skips), middle block, up blocks (consuming skips),
/// then `conv_out(SiLU(conv_norm_out(x)))`. Every block adds the time embedding in its resnets
/// and attends to the text context in its Transformer2Ds.
#[derive(Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    config: UNetConfig,
    conv_in: Conv2d<B>,
    time_embedding: TimestepEmbedding<B>,
    down_blocks: Vec<DownBlock<B>>,
    mid_block: Option<MidBlock<B>>,
    up_blocks: Vec<UpBlock<B>>,
    conv_norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Build the UNet `config` describes from `weights` (the UNet component's root), uploading
    /// every parameter to `backend`. A missing or mis-shaped tensor is an error naming it.
    pub fn load(backend: &B, config: UNetConfig, weights: &Weights<'_>) -> Result<Self> {
        config.check()?;
        let channels = &config.block_out_channels;
        let first = channels[0];
        let conv_in = Conv2d::load_same(
            backend,
            &weights.at("conv_in"),
            config.in_channels,
            first,
            config.conv_in_kernel,
        )?;
        let time_embedding = TimestepEmbedding::load(
            backend,
            &weights.at("time_embedding"),
            config.timestep_features(),
            config.time_embed_dim(),
        )?;
        let down_blocks = (0..config.levels())
            .map(|level| {
                DownBlock::load(
                    backend,
                    &weights.at("down_blocks").at(level),
                    &config,
                    level,
                )
            })
            .collect::<Result<_>>()?;
        let mid_block = match config.mid_block_type {
            Some(_) => Some(MidBlock::load(backend, &weights.at("mid_block"), &config)?),
            None => None,
        };
        let up_blocks = (0..config.levels())
            .map(|index| UpBlock::load(backend, &weights.at("up_blocks").at(index), &config, index))
            .collect::<Result<_>>()?;
        let conv_norm_out = GroupNorm::load(
            backend,
            &weights.at("conv_norm_out"),
            config.norm_num_groups,
            first,
            config.norm_eps,
        )?;
        let conv_out = Conv2d::load_same(
            backend,
            &weights.at("conv_out"),
            first,
            config.out_channels,
            config.conv_out_kernel,
        )?;
        Ok(UNet2DConditionModel {
            config,
            conv_in,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// Build from a store's UNet weights (a diffusers folder or an LDM single file).
    pub fn from_store(backend: &B, config: UNetConfig, store: &WeightStore) -> Result<Self> {
        Self::load(backend, config, &store.unet()?)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The model output for `sample [n, in_channels, h, w]` at `timestep` (the same for every
    /// sample), attending to `context [n, seq, cross_attention_dim]`: `[n, out_channels, h, w]`.
    /// Any positive `h` and `w`: odd sides round up on the way down and the up path crops back
    /// to each skip's size, as diffusers does.
    pub fn forward(
        &self,
        backend: &B,
        sample: &B::Tensor,
        timestep: f64,
        context: &B::Tensor,
    ) -> Result<B::Tensor> {
        let n = self.check_inputs(sample, context)?;
        if !timestep.is_finite() {
            return Err(Error::invalid_argument(
                "timestep",
                format!("{timestep} is not a finite number"),
            ));
        }
        let config = &self.config;

        let features = timestep_features(
            timestep,
            config.timestep_features(),
            config.flip_sin_to_cos,
            config.freq_shift,
        );
        let rows: Vec<f32> = (0..n).flat_map(|_| features.iter().copied()).collect();
        let features = HostTensor::from_shape_vec(vec![n, features.len()], rows)
            .map_err(|e| Error::shape("timestep features", e.to_string()))?;
        let temb = self.time_embedding.forward(backend, &features)?;
        // Every resnet activates the embedding before projecting it: do it once.
        let temb_act = backend.silu(&temb)?;
        drop(temb);
        let inputs = BlockInputs {
            temb_act: &temb_act,
            context,
        };

        let centered;
        let sample = if config.center_input_sample {
            centered = backend.affine(sample, 2.0, -1.0)?;
            &centered
        } else {
            sample
        };
        let mut x = self.conv_in.forward(backend, sample)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(backend, x, inputs, &mut skips)?;
        }
        if let Some(mid) = &self.mid_block {
            x = mid.forward(backend, &x, inputs)?;
        }
        for block in &self.up_blocks {
            x = block.forward(backend, x, inputs, &mut skips)?;
        }
        let x = self.conv_norm_out.forward_silu(backend, &x)?;
        self.conv_out.forward(backend, &x)
    }

    /// The batch size, after checking the inputs' shapes against the config.
    fn check_inputs(&self, sample: &B::Tensor, context: &B::Tensor) -> Result<usize> {
        let config = &self.config;
        let &[n, c, h, w] = sample.shape() else {
            return Err(Error::invalid_argument(
                "latents",
                format!(
                    "expected [n, {}, h, w], found {:?}",
                    config.in_channels,
                    sample.shape()
                ),
            ));
        };
        if c != config.in_channels {
            return Err(Error::invalid_argument(
                "latents",
                format!(
                    "{c} channels, but the UNet takes {} (shape {:?})",
                    config.in_channels,
                    sample.shape()
                ),
            ));
        }
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::invalid_argument(
                "latents",
                format!("empty latents: shape {:?}", sample.shape()),
            ));
        }
        let cross = (0..config.levels()).map(|i| config.cross_attention_dim.get(i));
        let &[cn, _, width] = context.shape() else {
            return Err(Error::invalid_argument(
                "context",
                format!("expected [{n}, seq, dim], found {:?}", context.shape()),
            ));
        };
        if cn != n {
            return Err(Error::invalid_argument(
                "context",
                format!("batch {cn} differs from the latents' batch {n}"),
            ));
        }
        if let Some(expected) = cross.clone().find(|&d| d != width) {
            return Err(Error::invalid_argument(
                "context",
                format!("width {width}, but the UNet's cross-attention takes {expected}"),
            ));
        }
        Ok(n)
    }
}

impl<B: Backend> Denoiser<B> for UNet2DConditionModel<B> {
    fn predict_noise(
        &self,
        backend: &B,
        latents: &B::Tensor,
        timestep: f64,
        context: &B::Tensor,
    ) -> Result<B::Tensor> {
        self.forward(backend, latents, timestep, context)
    }

    fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    /// Any latent size works (see [`UNet2DConditionModel::forward`]).
    fn spatial_multiple(&self) -> usize {
        1
    }
}
