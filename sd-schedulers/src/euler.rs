//! Euler's method on the probability-flow ODE in σ (Karras et al. 2022, Algorithm 2 without
//! churn), diffusers' `EulerDiscreteScheduler`; A1111's "Euler".

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::map2;
use crate::k_diffusion;
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas::SigmaBounds;

const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

#[derive(Debug, Clone)]
pub struct EulerScheduler {
    schedule: SigmaTimesteps,
    karras: Option<SigmaBounds>,
}

impl EulerScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0 (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `EulerDiscreteScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        for (field, value, default) in [
            ("interpolation_type", &config.interpolation_type, "linear"),
            ("timestep_type", &config.timestep_type, "discrete"),
            ("final_sigmas_type", &config.final_sigmas_type, "zero"),
        ] {
            if let Some(v) = value.as_deref().filter(|v| *v != default) {
                return Err(
                    config.error(field, format!("`{v}` is not supported, only `{default}`"))
                );
            }
        }
        let karras = config
            .use_karras_sigmas
            .unwrap_or(false)
            .then_some(SigmaBounds {
                min: config.sigma_min,
                max: config.sigma_max,
            });
        Ok(EulerScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::KDiffusion),
            karras,
        })
    }
}

impl Scheduler for EulerScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        self.schedule.set_k_diffusion(steps, self.karras)
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
        // dx/dσ = (x − x̂₀)/σ, one Euler step to the next σ.
        let dt = self.schedule.sigma(index + 1) - sigma;
        map2("Euler step", sample, &original, |x, x0| {
            x + (x - x0) / sigma * dt
        })
    }
}
