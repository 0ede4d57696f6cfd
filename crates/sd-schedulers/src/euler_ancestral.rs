//! Euler ancestral sampling (k-diffusion's `sample_euler_ancestral`), diffusers'
//! `EulerAncestralDiscreteScheduler`; A1111's "Euler a".
//!
//! Each step splits the move to the next σ into a deterministic Euler step down to σ_down and
//! fresh noise of size σ_up, with σ_down² + σ_up² = σ_next².

use sd_core::{HostTensor, Result, Scheduler, TorchGenerator};

use crate::config::{ClassDefaults, NoiseScheduleConfig, SchedulerConfig};
use crate::elementwise::{check_index, check_step, check_steps, map3};
use crate::k_diffusion;
use crate::noise_schedule::NoiseSchedule;
use crate::sigmas::{self, SigmaSchedule};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

#[derive(Debug, Clone)]
pub struct EulerAncestralScheduler {
    config: NoiseScheduleConfig,
    noise: NoiseSchedule,
    steps: usize,
    schedule: SigmaSchedule,
    timesteps: Vec<f64>,
}

impl EulerAncestralScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0 (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        &self.schedule.sigmas
    }

    /// From a `scheduler_config.json`, with `EulerAncestralDiscreteScheduler`'s defaults for
    /// missing keys. (That class has no Karras option; `use_karras_sigmas` is ignored, as there.)
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        config.require_noise_prediction(resolved.prediction_type)?;
        Ok(EulerAncestralScheduler {
            noise: NoiseSchedule::new(&resolved.beta_schedule, resolved.num_train_timesteps),
            config: resolved,
            steps: 0,
            schedule: SigmaSchedule::default(),
            timesteps: Vec::new(),
        })
    }
}

impl Scheduler for EulerAncestralScheduler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(steps, self.config.num_train_timesteps)?;
        self.schedule = sigmas::k_diffusion(&self.noise, &self.config, steps, None);
        self.timesteps = self
            .schedule
            .timesteps
            .iter()
            .map(|&t| f64::from(t))
            .collect();
        self.steps = steps;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn inference_steps(&self) -> usize {
        self.steps
    }

    fn init_noise_sigma(&self) -> f32 {
        sigmas::k_diffusion_init_noise_sigma(&self.schedule.sigmas, self.config.timestep_spacing)
    }

    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        Ok(k_diffusion::scale_model_input(
            sample,
            self.schedule.sigmas[index],
        ))
    }

    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        generator: &mut TorchGenerator,
    ) -> Result<HostTensor> {
        check_step(index, self.timesteps.len(), model_output, sample)?;
        let sigma = self.schedule.sigmas[index];
        let sigma_next = self.schedule.sigmas[index + 1];
        let original = k_diffusion::predict_original(
            self.config.prediction_type,
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

    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        k_diffusion::add_noise(self.schedule.sigmas[index], original, noise)
    }
}
