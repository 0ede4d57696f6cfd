//! DDIM (Song et al. 2020, "Denoising Diffusion Implicit Models"), diffusers' `DDIMScheduler`.
//!
//! Each step predicts x̂₀, then moves to the previous timestep along the predicted noise
//! direction; `eta` > 0 adds fresh noise (eta = 1 is DDPM-like ancestral sampling).

use sd_core::{HostTensor, Result, Scheduler, TorchGenerator};

use crate::alpha_family;
use crate::config::{ClassDefaults, NoiseScheduleConfig, SchedulerConfig};
use crate::elementwise::{check_index, check_step, check_steps, clip, map2};
use crate::noise_schedule::NoiseSchedule;
use crate::spacing;

const DEFAULTS: ClassDefaults = ClassDefaults::linear("leading");

#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: NoiseScheduleConfig,
    noise: NoiseSchedule,
    /// ᾱ "before" the first training timestep (1, or ᾱ₀ when `set_alpha_to_one` is false).
    final_alpha_cumprod: f32,
    clip_sample_range: Option<f32>,
    eta: f32,
    steps: usize,
    timesteps: Vec<f64>,
}

impl DdimScheduler {
    /// From a `scheduler_config.json`, with `DDIMScheduler`'s defaults for missing keys; eta 0.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        let noise = NoiseSchedule::new(&resolved.beta_schedule, resolved.num_train_timesteps);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            noise.alphas_cumprod[0]
        };
        let clip_sample_range = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(DdimScheduler {
            config: resolved,
            noise,
            final_alpha_cumprod,
            clip_sample_range,
            eta: 0.0,
            steps: 0,
            timesteps: Vec::new(),
        })
    }

    /// The weight η of the fresh noise each step adds (diffusers' `eta` step argument).
    pub fn with_eta(mut self, eta: f32) -> Self {
        self.eta = eta;
        self
    }

    fn alpha_prod(&self, timestep: i64) -> f32 {
        self.noise
            .alpha_cumprod(timestep)
            .unwrap_or(self.final_alpha_cumprod)
    }
}

impl Scheduler for DdimScheduler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(steps, self.config.num_train_timesteps)?;
        self.steps = steps;
        self.timesteps = spacing::discrete(
            self.config.timestep_spacing,
            self.config.num_train_timesteps,
            steps,
            self.config.steps_offset,
        )
        .into_iter()
        .map(|t| t as f64)
        .collect();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn inference_steps(&self) -> usize {
        self.steps
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        generator: &mut TorchGenerator,
    ) -> Result<HostTensor> {
        check_step(index, self.timesteps.len(), model_output, sample)?;
        let timestep = self.timesteps[index] as i64;
        // Always one stride back, even for linspace spacing whose strides are uneven.
        let prev_timestep = timestep - (self.config.num_train_timesteps / self.steps) as i64;
        let alpha_prod = self.alpha_prod(timestep);
        let alpha_prod_prev = self.alpha_prod(prev_timestep);
        let beta_prod = 1.0 - alpha_prod;
        let beta_prod_prev = 1.0 - alpha_prod_prev;

        let prediction = self.config.prediction_type;
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

    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        alpha_family::add_noise(
            self.alpha_prod(self.timesteps[index] as i64),
            original,
            noise,
        )
    }
}
