//! DDIM (Song et al. 2020, "Denoising Diffusion Implicit Models"), diffusers' `DDIMScheduler`.
//!
//! Each step predicts x̂₀, then moves to the previous timestep along the predicted noise
//! direction; `eta` > 0 adds fresh noise (eta = 1 is DDPM-like ancestral sampling).

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::alpha_family;
use crate::alpha_timesteps::AlphaTimesteps;
use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::{clip, map2};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("leading");

#[derive(Debug, Clone)]
pub struct DdimScheduler {
    schedule: AlphaTimesteps,
    clip_sample_range: Option<f32>,
    eta: f32,
}

impl DdimScheduler {
    /// From a `scheduler_config.json`, with `DDIMScheduler`'s defaults for missing keys; eta 0.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let schedule = AlphaTimesteps::new(
            config.noise_schedule(&DEFAULTS)?,
            config.set_alpha_to_one.unwrap_or(true),
        );
        let clip_sample_range = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(DdimScheduler {
            schedule,
            clip_sample_range,
            eta: 0.0,
        })
    }

    /// The weight η of the fresh noise each step adds (diffusers' `eta` step argument).
    pub fn with_eta(mut self, eta: f32) -> Self {
        self.eta = eta;
        self
    }
}

impl Scheduler for DdimScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let timesteps = self.schedule.spaced(steps)?;
        self.schedule.set(steps, &timesteps);
        Ok(())
    }

    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        self.schedule.check_step(index, model_output, sample)?;
        let timestep = self.schedule.timestep(index);
        // Always one stride back, even for linspace spacing whose strides are uneven.
        let prev_timestep = timestep - self.schedule.stride();
        let alpha_prod = self.schedule.alpha_prod(timestep);
        let alpha_prod_prev = self.schedule.alpha_prod(prev_timestep);
        let beta_prod = 1.0 - alpha_prod;
        let beta_prod_prev = 1.0 - alpha_prod_prev;

        let prediction = self.schedule.config.prediction_type;
        let original = clip(
            alpha_family::predict_original(prediction, alpha_prod, sample, model_output)?,
            self.clip_sample_range,
        );
        let epsilon = alpha_family::predict_epsilon(prediction, alpha_prod, sample, model_output)?;

        // σ_t(η) of the DDIM paper, eq. (16).
        let variance = (beta_prod_prev / beta_prod) * (1.0 - alpha_prod / alpha_prod_prev);
        let std_dev = self.eta * variance.sqrt();
        let direction_coeff = (1.0 - alpha_prod_prev - std_dev * std_dev).sqrt();
        let sqrt_alpha_prev = alpha_prod_prev.sqrt();
        let prev = map2("DDIM step", &original, &epsilon, |x0, e| {
            sqrt_alpha_prev * x0 + direction_coeff * e
        })?;
        if self.eta > 0.0 {
            let noise = generator.randn(model_output.shape());
            return map2("DDIM step", &prev, &noise, |x, n| x + std_dev * n);
        }
        Ok(prev)
    }
}
