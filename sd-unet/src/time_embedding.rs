//! The timestep embedding: sinusoidal features of the timestep, then `TimestepEmbedding`
//! (`linear_1 → SiLU → linear_2`).

use sd_core::weights::Weights;
use sd_core::{Backend, HostTensor, Result};

use sd_core::nn::Linear;

/// DDPM's sinusoidal features of `timestep`, `dim` wide (even): with half = dim/2 and
/// `fᵢ = exp(−ln(10000) · i / (half − freq_shift))`, the features are `[sin(t·fᵢ)…, cos(t·fᵢ)…]`,
/// or `[cos…, sin…]` with `flip_sin_to_cos`.
///
/// Computed in f32 step by step as diffusers does (the timestep is cast to f32 first): at
/// t ≈ 1000 an f32 rounding of `t·fᵢ` moves the sine by ~6e-5, so the order of operations matters.
pub fn timestep_features(
    timestep: f64,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
) -> Vec<f32> {
    let half = dim / 2;
    let t = timestep as f32;
    let log_period = -(10000f64.ln() as f32);
    let (mut sin, mut cos) = (Vec::with_capacity(half), Vec::with_capacity(half));
    for i in 0..half {
        let exponent = log_period * i as f32 / (half as f32 - freq_shift);
        let angle = t * exponent.exp();
        sin.push(angle.sin());
        cos.push(angle.cos());
    }
    if flip_sin_to_cos {
        cos.extend(sin);
        cos
    } else {
        sin.extend(cos);
        sin
    }
}

/// `linear_2(SiLU(linear_1(features)))`.
#[derive(Debug)]
pub struct TimestepEmbedding<B: Backend> {
    linear_1: Linear<B>,
    linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    /// `weights` is the `time_embedding` scope.
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        in_features: usize,
        time_embed_dim: usize,
    ) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: Linear::load(
                backend,
                &weights.at("linear_1"),
                in_features,
                time_embed_dim,
                true,
            )?,
            linear_2: Linear::load(
                backend,
                &weights.at("linear_2"),
                time_embed_dim,
                time_embed_dim,
                true,
            )?,
        })
    }

    /// The embedding of `features` (one row per sample) `[n, in]` → `[n, time_embed_dim]`.
    pub fn forward(&self, backend: &B, features: &HostTensor) -> Result<B::Tensor> {
        let x = backend.upload(features)?;
        let h = self.linear_1.forward(backend, &x)?;
        let h = backend.silu(&h)?;
        self.linear_2.forward(backend, &h)
    }
}
