//! What the ᾱ-parameterised samplers (DDIM, DDPM, PNDM, LCM) share: x̂₀ from the model output,
//! clipping, and forward noising `√ᾱ·x₀ + √(1−ᾱ)·ε`.

use sd_core::{HostTensor, Result};

use crate::config::PredictionType;
use crate::elementwise::map2;

/// The clean-sample estimate x̂₀ at ᾱ = `alpha_prod` from the model output.
pub(crate) fn predict_original(
    prediction: PredictionType,
    alpha_prod: f32,
    sample: &HostTensor,
    model_output: &HostTensor,
) -> Result<HostTensor> {
    let (sqrt_alpha, sqrt_beta) = (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt());
    match prediction {
        PredictionType::Epsilon => map2("predict x0", sample, model_output, |x, e| {
            (x - sqrt_beta * e) / sqrt_alpha
        }),
        PredictionType::VPrediction => map2("predict x0", sample, model_output, |x, v| {
            sqrt_alpha * x - sqrt_beta * v
        }),
        PredictionType::Sample => map2("predict x0", sample, model_output, |_, x0| x0),
    }
}

/// The noise estimate ε̂ matching the unclipped [`predict_original`] (DDIM's direction term).
pub(crate) fn predict_epsilon(
    prediction: PredictionType,
    alpha_prod: f32,
    sample: &HostTensor,
    model_output: &HostTensor,
) -> Result<HostTensor> {
    let (sqrt_alpha, sqrt_beta) = (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt());
    match prediction {
        PredictionType::Epsilon => Ok(model_output.clone()),
        PredictionType::VPrediction => map2("predict epsilon", sample, model_output, |x, v| {
            sqrt_alpha * v + sqrt_beta * x
        }),
        PredictionType::Sample => map2("predict epsilon", sample, model_output, |x, x0| {
            (x - sqrt_alpha * x0) / sqrt_beta
        }),
    }
}

/// Forward diffusion to ᾱ = `alpha_prod`: `√ᾱ·x₀ + √(1−ᾱ)·ε`.
pub(crate) fn add_noise(
    alpha_prod: f32,
    original: &HostTensor,
    noise: &HostTensor,
) -> Result<HostTensor> {
    let (sqrt_alpha, sqrt_one_minus) = (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt());
    map2("add_noise", original, noise, |x, n| {
        sqrt_alpha * x + sqrt_one_minus * n
    })
}
