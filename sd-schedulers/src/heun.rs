//! Heun's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1 without churn),
//! diffusers' `HeunDiscreteScheduler`; A1111's "Heun".
//!
//! Two model evaluations per step: an Euler predictor to the next σ, then a corrector with the
//! mean of both slopes. [`timesteps`](Scheduler::timesteps) lists every timestep but the first
//! twice, one entry per evaluation.

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::{clip, map2, map3};
use crate::k_diffusion;
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas::{SigmaBounds, SigmaSchedule};

const DEFAULTS: ClassDefaults = ClassDefaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "linear",
    timestep_spacing: "linspace",
};

/// What the predictor leaves for the corrector.
#[derive(Debug, Clone)]
struct Predictor {
    derivative: HostTensor,
    dt: f32,
    sample: HostTensor,
}

#[derive(Debug, Clone)]
pub struct HeunScheduler {
    /// σ per evaluation: σ₀, σ₁, σ₁, σ₂, σ₂, …, σ_{n−1}, σ_{n−1}, 0.
    schedule: SigmaTimesteps,
    karras: bool,
    clip_sample_range: Option<f32>,
    /// Set between a step's predictor and its corrector.
    predictor: Option<Predictor>,
}

impl HeunScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0 (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `HeunDiscreteScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        let clip_sample_range = config
            .clip_sample
            .unwrap_or(false)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(HeunScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::KDiffusion),
            karras: config.use_karras_sigmas.unwrap_or(false),
            clip_sample_range,
            predictor: None,
        })
    }
}

/// `[a, b, c, …]` → `[a, b, b, c, c, …]`.
fn repeat_after_first<T: Copy>(values: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(2 * values.len());
    for (i, &v) in values.iter().enumerate() {
        out.push(v);
        if i > 0 {
            out.push(v);
        }
    }
    out
}

impl Scheduler for HeunScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let karras = self.karras.then_some(SigmaBounds::default());
        let SigmaSchedule { timesteps, sigmas } = self.schedule.k_diffusion(steps, karras)?;
        // The final σ = 0 appears once.
        let (last, inner) = (sigmas[sigmas.len() - 1], &sigmas[..sigmas.len() - 1]);
        let mut evaluation_sigmas = repeat_after_first(inner);
        evaluation_sigmas.push(last);
        let evaluation_timesteps = repeat_after_first(&timesteps)
            .into_iter()
            .map(f64::from)
            .collect();
        self.schedule
            .set(steps, evaluation_timesteps, evaluation_sigmas);
        self.predictor = None;
        Ok(())
    }

    fn order(&self) -> usize {
        2
    }

    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        _generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        self.schedule.check_step(index, model_output, sample)?;
        let prediction = self.schedule.config.prediction_type;
        match self.predictor.take() {
            None => {
                let (sigma, sigma_next) =
                    (self.schedule.sigma(index), self.schedule.sigma(index + 1));
                let original =
                    k_diffusion::predict_original(prediction, sigma, sample, model_output)?;
                let original = clip(original, self.clip_sample_range);
                let derivative = map2("Heun step", sample, &original, |x, x0| (x - x0) / sigma)?;
                let dt = sigma_next - sigma;
                let next = map2("Heun step", sample, &derivative, |x, d| x + d * dt)?;
                self.predictor = Some(Predictor {
                    derivative,
                    dt,
                    sample: sample.clone(),
                });
                Ok(next)
            }
            Some(Predictor {
                derivative: first,
                dt,
                sample: start,
            }) => {
                // The corrector evaluates the model at the predicted point, σ = sigmas[index].
                let sigma_next = self.schedule.sigma(index);
                let original =
                    k_diffusion::predict_original(prediction, sigma_next, sample, model_output)?;
                let original = clip(original, self.clip_sample_range);
                let second = map2("Heun step", sample, &original, |x, x0| {
                    (x - x0) / sigma_next
                })?;
                map3("Heun step", &start, &first, &second, |x, d1, d2| {
                    x + (d1 + d2) / 2.0 * dt
                })
            }
        }
    }
}
