//! Euler ancestral sampling (k-diffusion's `sample_euler_ancestral`), diffusers'
//! `EulerAncestralDiscreteScheduler`; A1111's "Euler a".
//!
//! Each step splits the move to the next σ into a deterministic Euler step down to σ_down and
//! fresh noise of size σ_up, with σ_down² + σ_up² = σ_next².

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::map3;
use crate::k_diffusion;
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

#[derive(Debug, Clone)]
pub struct EulerAncestralScheduler {
    schedule: SigmaTimesteps,
}

impl EulerAncestralScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0 (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `EulerAncestralDiscreteScheduler`'s defaults for
    /// missing keys. (That class has no Karras option; `use_karras_sigmas` is ignored, as there.)
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        config.require_noise_prediction(resolved.prediction_type)?;
        Ok(EulerAncestralScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::KDiffusion),
        })
    }
}

impl Scheduler for EulerAncestralScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        self.schedule.set_k_diffusion(steps, None)
    }

    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        self.schedule.check_step(index, model_output, sample)?;
        let sigma = self.schedule.sigma(index);
        let sigma_next = self.schedule.sigma(index + 1);
        let original = k_diffusion::predict_original(
            self.schedule.config.prediction_type,
            sigma,
            sample,
            model_output,
        )?;
        let (from2, to2) = (sigma * sigma, sigma_next * sigma_next);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let dt = sigma_down - sigma;
        // diffusers draws even on the last step, where σ_up = 0: the stream must stay in step.
        let noise = generator.randn(model_output.shape());
        map3("Euler a step", sample, &original, &noise, |x, x0, n| {
            (x + (x - x0) / sigma * dt) + n * sigma_up
        })
    }
}
