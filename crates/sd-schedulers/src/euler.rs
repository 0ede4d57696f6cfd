//! Euler's method on the probability-flow ODE in σ (Karras et al. 2022, Algorithm 2 without
//! churn), diffusers' `EulerDiscreteScheduler`; A1111's "Euler".

use sd_core::{HostTensor, Result, Scheduler, TorchGenerator};

use crate::config::{ClassDefaults, NoiseScheduleConfig, SchedulerConfig};
use crate::elementwise::{check_index, check_step, check_steps, map2};
use crate::k_diffusion;
use crate::noise_schedule::NoiseSchedule;
use crate::sigmas::{self, SigmaBounds, SigmaSchedule};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

#[derive(Debug, Clone)]
pub struct EulerScheduler {
    config: NoiseScheduleConfig,
    noise: NoiseSchedule,
    karras: Option<SigmaBounds>,
    steps: usize,
    schedule: SigmaSchedule,
    timesteps: Vec<f64>,
}

impl EulerScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0 (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        &self.schedule.sigmas
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
            noise: NoiseSchedule::new(&resolved.beta_schedule, resolved.num_train_timesteps),
            config: resolved,
            karras,
            steps: 0,
            schedule: SigmaSchedule::default(),
            timesteps: Vec::new(),
        })
    }
}

impl Scheduler for EulerScheduler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(steps, self.config.num_train_timesteps)?;
        self.schedule = sigmas::k_diffusion(&self.noise, &self.config, steps, self.karras);
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
        _generator: &mut TorchGenerator,
    ) -> Result<HostTensor> {
        check_step(index, self.timesteps.len(), model_output, sample)?;
        let sigma = self.schedule.sigmas[index];
        let original = k_diffusion::predict_original(
            self.config.prediction_type,
            sigma,
            sample,
            model_output,
        )?;
        // dx/dσ = (x − x̂₀)/σ, one Euler step to the next σ.
        let dt = self.schedule.sigmas[index + 1] - sigma;
        map2("Euler step", sample, &original, |x, x0| {
            x + (x - x0) / sigma * dt
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
