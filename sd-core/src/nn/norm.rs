//! `torch.nn.GroupNorm` (optionally followed by SiLU, fused) and `torch.nn.LayerNorm`.

use crate::weights::Weights;
use crate::{Backend, Result};

use super::parameter;

/// Group norm over `[n, c, ...]` with per-channel affine `weight, bias [c]`.
#[derive(Debug)]
pub struct GroupNorm<B: Backend> {
    weight: B::Tensor,
    bias: B::Tensor,
    groups: usize,
    eps: f32,
}

impl<B: Backend> GroupNorm<B> {
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        groups: usize,
        channels: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(GroupNorm {
            weight: parameter(backend, weights, "weight", &[channels])?,
            bias: parameter(backend, weights, "bias", &[channels])?,
            groups,
            eps,
        })
    }

    /// The normalised input.
    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        self.apply(backend, x, false)
    }

    /// `SiLU(norm(x))`, the pre-activation every resnet and output head uses.
    pub fn forward_silu(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        self.apply(backend, x, true)
    }

    fn apply(&self, backend: &B, x: &B::Tensor, silu: bool) -> Result<B::Tensor> {
        backend.group_norm(x, self.groups, &self.weight, &self.bias, self.eps, silu)
    }
}

/// Layer norm over the last dim with affine `weight, bias [dim]`.
#[derive(Debug)]
pub struct LayerNorm<B: Backend> {
    weight: B::Tensor,
    bias: B::Tensor,
    eps: f32,
}

impl<B: Backend> LayerNorm<B> {
    pub fn load(backend: &B, weights: &Weights<'_>, dim: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            weight: parameter(backend, weights, "weight", &[dim])?,
            bias: parameter(backend, weights, "bias", &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        backend.layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}
