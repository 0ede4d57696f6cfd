//! `torch.nn.Conv2d` with a square kernel and a bias (every SD 1.5 convolution has both).

use crate::weights::Weights;
use crate::{Backend, Conv2dParams, Result, WeightRole};

use super::{parameter, weight_parameter};

/// A 2-D convolution with weight `[out, in, k, k]` and bias `[out]`.
#[derive(Debug)]
pub struct Conv2d<B: Backend> {
    weight: B::Tensor,
    bias: B::Tensor,
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
        Ok(Conv2d {
            weight: weight_parameter(
                backend,
                weights,
                "weight",
                &[out_channels, in_channels, kernel, kernel],
                WeightRole::Conv,
            )?,
            bias: parameter(backend, weights, "bias", &[out_channels])?,
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
        backend.conv2d(x, &self.weight, Some(&self.bias), self.params)
    }
}
