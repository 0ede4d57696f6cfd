//! `torch.nn.Linear`: `x · weightᵀ + bias` over the last dim.

use crate::weights::Weights;
use crate::{Backend, Result, WeightRole};

use super::{parameter, weight_parameter};

/// A linear layer with weight `[out, in]` and an optional bias `[out]`.
#[derive(Debug)]
pub struct Linear<B: Backend> {
    weight: B::Tensor,
    bias: Option<B::Tensor>,
}

impl<B: Backend> Linear<B> {
    /// Load `weight` (and `bias` when `with_bias`) from `weights`. A 1×1 conv weight
    /// `[out, in, 1, 1]` is accepted as the same matrix (LDM files store some projections so).
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        in_features: usize,
        out_features: usize,
        with_bias: bool,
    ) -> Result<Self> {
        let weight = weight_parameter(
            backend,
            weights,
            "weight",
            &[out_features, in_features],
            WeightRole::Linear,
        )?;
        let bias = if with_bias {
            Some(parameter(backend, weights, "bias", &[out_features])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// `x [..., in]` → `[..., out]`.
    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        backend.linear(x, &self.weight, self.bias.as_ref())
    }
}
