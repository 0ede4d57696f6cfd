//! `torch.nn.Conv2d` with a square kernel, with a bias (every SD 1.5 convolution) or without
//! (CLIP's patch embedding, TAESD's resampling convolutions).

use crate::weights::Weights;
use crate::{Backend, Conv2dParams, Result, WeightRole};

use super::{parameter, weight_parameter};

/// A 2-D convolution with weight `[out, in, k, k]` and an optional bias `[out]`.
#[derive(Debug)]
pub struct Conv2d<B: Backend> {
    weight: B::Tensor,
    bias: Option<B::Tensor>,
    params: Conv2dParams,
}

impl<B: Backend> Conv2d<B> {
    /// Load `weight` and `bias` for a `kernel`×`kernel` convolution from `in_channels` to
    /// `out_channels` channels.
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        params: Conv2dParams,
    ) -> Result<Self> {
        let mut conv =
            Self::load_without_bias(backend, weights, in_channels, out_channels, kernel, params)?;
        conv.bias = Some(parameter(backend, weights, "bias", &[out_channels])?);
        Ok(conv)
    }

    /// [`load`](Self::load) for a convolution made with `bias=False` (only `weight` is read).
    pub fn load_without_bias(
        backend: &B,
        weights: &Weights<'_>,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        params: Conv2dParams,
    ) -> Result<Self> {
        Ok(Conv2d {
            weight: weight_parameter(
                backend,
                weights,
                "weight",
                &[out_channels, in_channels, kernel, kernel],
                WeightRole::Conv,
            )?,
            bias: None,
            params,
        })
    }

    /// A stride-1 convolution that keeps the spatial size (`padding = (kernel − 1) / 2`).
    pub fn load_same(
        backend: &B,
        weights: &Weights<'_>,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
    ) -> Result<Self> {
        let params = Conv2dParams::same((kernel - 1) / 2);
        Self::load(backend, weights, in_channels, out_channels, kernel, params)
    }

    /// `x [n, in, h, w]` → `[n, out, h', w']`.
    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        backend.conv2d(x, &self.weight, self.bias.as_ref(), self.params)
    }
}
