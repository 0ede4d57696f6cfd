//! Linear multistep (k-diffusion's `sample_lms`), diffusers' `LMSDiscreteScheduler`; A1111's
//! "LMS" / "LMS Karras".
//!
//! The ODE derivative of up to four past steps is extrapolated with a Lagrange polynomial in σ,
//! integrated over the step.

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::map2;
use crate::k_diffusion;
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas::SigmaBounds;

const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

/// Derivatives the multistep formula combines (diffusers' default `order`).
pub(crate) const MAX_ORDER: usize = 4;

#[derive(Debug, Clone)]
pub struct LmsScheduler {
    schedule: SigmaTimesteps,
    karras: bool,
    /// Past derivatives dx/dσ, oldest first.
    derivatives: Vec<HostTensor>,
}

impl LmsScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0 (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `LMSDiscreteScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        Ok(LmsScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::KDiffusion),
            karras: config.use_karras_sigmas.unwrap_or(false),
            derivatives: Vec::new(),
        })
    }
}

impl Scheduler for LmsScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        // LMS's Karras spacing ignores sigma_min/sigma_max in the config, as diffusers' does.
        let karras = self.karras.then_some(SigmaBounds::default());
        self.schedule.set_k_diffusion(steps, karras)?;
        self.derivatives.clear();
        Ok(())
    }

    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        _generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        self.schedule.check_step(index, model_output, sample)?;
        let sigma = self.schedule.sigma(index);
        let original = k_diffusion::predict_original(
            self.schedule.config.prediction_type,
            sigma,
            sample,
            model_output,
        )?;
        let derivative = map2("LMS step", sample, &original, |x, x0| (x - x0) / sigma)?;
        if self.derivatives.len() == MAX_ORDER {
            self.derivatives.remove(0);
        }
        self.derivatives.push(derivative);

        // The order follows the step index, not the history: an img2img run that starts late
        // weights its first derivative with the full-order coefficient, as diffusers does.
        lms_update(self.schedule.sigmas(), index, &self.derivatives, sample)
    }
}

/// One linear multistep step at step `index` of the σ schedule `sigmas`: `sample` plus the
/// weighted sum of the last `min(index + 1, 4)` `derivatives` (oldest first), summed newest
/// first as k-diffusion's `sample_lms` and diffusers' `LMSDiscreteScheduler` do.
pub(crate) fn lms_update(
    sigmas: &[f32],
    index: usize,
    derivatives: &[HostTensor],
    sample: &HostTensor,
) -> Result<HostTensor> {
    let order = (index + 1).min(MAX_ORDER);
    let mut update: Option<HostTensor> = None;
    for (j, derivative) in derivatives.iter().rev().take(order).enumerate() {
        let coeff = lms_coefficient(sigmas, order, index, j) as f32;
        update = Some(match update {
            None => derivative.mapv(|d| coeff * d),
            Some(acc) => map2("LMS step", &acc, derivative, |a, d| a + coeff * d)?,
        });
    }
    match update {
        Some(update) => map2("LMS step", sample, &update, |x, u| x + u),
        None => Ok(sample.clone()),
    }
}

/// The linear multistep weight of the derivative taken `j` steps back, at step `index` of the σ
/// schedule `sigmas`, for an `order`-point method (k-diffusion's `linear_multistep_coeff`): ∫
/// over [σ_index, σ_index+1] of the Lagrange basis polynomial that is 1 at σ_{index−j} and 0 at
/// the other `order − 1` past σ. Its degree is below 4, so two-point Gauss–Legendre is exact
/// (k-diffusion integrates numerically to a relative 1e-4; both land on the exact value).
pub(crate) fn lms_coefficient(sigmas: &[f32], order: usize, index: usize, j: usize) -> f64 {
    let s = |k: usize| f64::from(sigmas[index - k]);
    let basis = |tau: f64| {
        (0..order)
            .filter(|&k| k != j)
            .map(|k| (tau - s(k)) / (s(j) - s(k)))
            .product::<f64>()
    };
    let (a, b) = (s(0), f64::from(sigmas[index + 1]));
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    let offset = half / 3f64.sqrt();
    half * (basis(mid - offset) + basis(mid + offset))
}
