//! diffusers' `ResnetBlock2D` (pre-norm, "default" time-embedding mode).

use crate::weights::Weights;
use crate::{Backend, Result, TensorInfo};

use super::{Conv2d, GroupNorm, Linear};

/// The sizes a [`ResnetBlock2D`] is built for.
#[derive(Debug, Clone, Copy)]
pub struct ResnetShape {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the (activated) time embedding added after `conv1`; `None` in the VAE.
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f32,
    /// The sum with the shortcut is divided by this (1 everywhere in SD 1.5).
    pub output_scale_factor: f32,
}

/// `shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))) + time_emb_proj(SiLU(temb)))))`,
/// divided by `output_scale_factor`. The shortcut is a 1×1 conv when the channel count changes.
#[derive(Debug)]
pub struct ResnetBlock2D<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: Conv2d<B>,
    time_emb_proj: Option<Linear<B>>,
    norm2: GroupNorm<B>,
    conv2: Conv2d<B>,
    conv_shortcut: Option<Conv2d<B>>,
    output_scale_factor: f32,
}

impl<B: Backend> ResnetBlock2D<B> {
    pub fn load(backend: &B, weights: &Weights<'_>, shape: ResnetShape) -> Result<Self> {
        let ResnetShape {
            in_channels: cin,
            out_channels: cout,
            groups,
            eps,
            ..
        } = shape;
        let time_emb_proj = match shape.temb_channels {
            Some(temb) => Some(Linear::load(
                backend,
                &weights.at("time_emb_proj"),
                temb,
                cout,
                true,
            )?),
            None => None,
        };
        let conv_shortcut = if cin != cout {
            Some(Conv2d::load_same(
                backend,
                &weights.at("conv_shortcut"),
                cin,
                cout,
                1,
            )?)
        } else {
            None
        };
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(backend, &weights.at("norm1"), groups, cin, eps)?,
            conv1: Conv2d::load_same(backend, &weights.at("conv1"), cin, cout, 3)?,
            time_emb_proj,
            norm2: GroupNorm::load(backend, &weights.at("norm2"), groups, cout, eps)?,
            conv2: Conv2d::load_same(backend, &weights.at("conv2"), cout, cout, 3)?,
            conv_shortcut,
            output_scale_factor: shape.output_scale_factor,
        })
    }

    /// `x [n, in, h, w]` → `[n, out, h, w]`. `temb_act` is `SiLU(temb) [n, temb_channels]`
    /// (the caller activates it once for every block); it is required when the block has a
    /// `time_emb_proj` and ignored otherwise.
    pub fn forward(
        &self,
        backend: &B,
        x: &B::Tensor,
        temb_act: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let mut h = self.norm1.forward_silu(backend, x)?;
        h = self.conv1.forward(backend, &h)?;
        if let Some(proj) = &self.time_emb_proj {
            let temb = temb_act.ok_or_else(|| {
                crate::Error::invalid_argument("temb", "this resnet block needs a time embedding")
            })?;
            let t = proj.forward(backend, temb)?;
            let [n, c] = t.shape()[..] else {
                return Err(crate::Error::shape(
                    "resnet time embedding",
                    format!("expected [n, c], found {:?}", t.shape()),
                ));
            };
            h = backend.add(&h, &backend.reshape(&t, &[n, c, 1, 1])?)?;
        }
        h = self.norm2.forward_silu(backend, &h)?;
        h = self.conv2.forward(backend, &h)?;
        let out = match &self.conv_shortcut {
            Some(conv) => backend.add(&conv.forward(backend, x)?, &h)?,
            None => backend.add(x, &h)?,
        };
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            backend.scale(&out, self.output_scale_factor.recip())
        }
    }
}
