//! What the σ-parameterised samplers (Euler, Euler a, LMS, Heun) share on tensors: input
//! scaling, x̂₀ from the model output, and forward noising `x₀ + σ·ε`.

use sd_core::{HostTensor, Result};

use crate::config::PredictionType;
use crate::elementwise::map2;

/// The denoiser sees `x/√(σ²+1)`, unit variance at every noise level.
pub(crate) fn scale_model_input(sample: &HostTensor, sigma: f32) -> HostTensor {
    let scale = (sigma * sigma + 1.0).sqrt();
    sample.mapv(|x| x / scale)
}

/// The clean-sample estimate x̂₀ at noise level `sigma`.
pub(crate) fn predict_original(
    prediction: PredictionType,
    sigma: f32,
    sample: &HostTensor,
    model_output: &HostTensor,
) -> Result<HostTensor> {
    match prediction {
        PredictionType::Epsilon => map2("predict x0", sample, model_output, |x, e| x - sigma * e),
        PredictionType::VPrediction => {
            let var = sigma * sigma + 1.0;
            let c_out = -sigma / var.sqrt();
            map2("predict x0", sample, model_output, |x, v| {
                v * c_out + x / var
            })
        }
        PredictionType::Sample => map2("predict x0", sample, model_output, |_, x0| x0),
    }
}

/// Forward diffusion to noise level `sigma`: `x₀ + σ·ε`.
pub(crate) fn add_noise(
    sigma: f32,
    original: &HostTensor,
    noise: &HostTensor,
) -> Result<HostTensor> {
    map2("add_noise", original, noise, |x, n| x + n * sigma)
}
