//! Latent Consistency Models (Luo et al. 2023), diffusers' `LCMScheduler`: for LCM-distilled
//! UNets (or an LCM-LoRA), a few steps each jump to the consistency model's x̂₀ and re-noise it
//! to the next timestep with fresh noise.

use sd_core::{Error, HostTensor, Result, Scheduler, TorchGenerator};

use crate::alpha_family;
use crate::config::{ClassDefaults, NoiseScheduleConfig, SchedulerConfig};
use crate::elementwise::{check_index, check_step, check_steps, clip, map2};
use crate::noise_schedule::NoiseSchedule;

const DEFAULTS: ClassDefaults = ClassDefaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "scaled_linear",
    timestep_spacing: "leading",
};

/// σ_data of the consistency-model boundary condition.
const SIGMA_DATA: f32 = 0.5;

#[derive(Debug, Clone)]
pub struct LcmScheduler {
    config: NoiseScheduleConfig,
    noise: NoiseSchedule,
    final_alpha_cumprod: f32,
    clip_sample_range: Option<f32>,
    /// Length of the distillation schedule the inference timesteps are picked from.
    original_inference_steps: usize,
    timestep_scaling: f32,
    steps: usize,
    timesteps: Vec<f64>,
}

impl LcmScheduler {
    /// From a `scheduler_config.json`, with `LCMScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        let noise = NoiseSchedule::new(&resolved.beta_schedule, resolved.num_train_timesteps);
        let original_inference_steps = config.original_inference_steps.unwrap_or(50);
        if original_inference_steps == 0 || original_inference_steps > resolved.num_train_timesteps
        {
            return Err(config.error(
                "original_inference_steps",
                format!(
                    "must be between 1 and num_train_timesteps = {}, got {original_inference_steps}",
                    resolved.num_train_timesteps
                ),
            ));
        }
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            noise.alphas_cumprod[0]
        };
        let clip_sample_range = config
            .clip_sample
            .unwrap_or(false)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(LcmScheduler {
            config: resolved,
            noise,
            final_alpha_cumprod,
            clip_sample_range,
            original_inference_steps,
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0) as f32,
            steps: 0,
            timesteps: Vec::new(),
        })
    }

    fn alpha_prod(&self, timestep: i64) -> f32 {
        self.noise
            .alpha_cumprod(timestep)
            .unwrap_or(self.final_alpha_cumprod)
    }
}

impl Scheduler for LcmScheduler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(steps, self.config.num_train_timesteps)?;
        let original = self.original_inference_steps;
        if steps > original {
            return Err(Error::invalid_argument(
                "steps",
                format!(
                    "{steps} is more than the {original} steps of the LCM distillation schedule \
                     (original_inference_steps)"
                ),
            ));
        }
        // The distillation schedule k−1, 2k−1, …, T−1 (k = T / original), descending; inference
        // takes `steps` evenly spaced entries of it, starting with the noisiest.
        let k = (self.config.num_train_timesteps / original) as i64;
        let distilled: Vec<i64> = (1..=original as i64).rev().map(|i| i * k - 1).collect();
        let stride = original as f64 / steps as f64;
        self.timesteps = (0..steps)
            .map(|i| distilled[(i as f64 * stride).floor() as usize] as f64)
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
        // The last step re-noises to its own timestep, which `prev` then never uses.
        let prev_timestep = self
            .timesteps
            .get(index + 1)
            .map_or(timestep, |&t| t as i64);
        let alpha_prod = self.alpha_prod(timestep);
        let alpha_prod_prev = self.alpha_prod(prev_timestep);

        // Boundary-condition scalings c_skip, c_out of the consistency function.
        let scaled_t = timestep as f32 * self.timestep_scaling;
        let c_skip = SIGMA_DATA * SIGMA_DATA / (scaled_t * scaled_t + SIGMA_DATA * SIGMA_DATA);
        let c_out = scaled_t / (scaled_t * scaled_t + SIGMA_DATA * SIGMA_DATA).sqrt();

        let original = clip(
            alpha_family::predict_original(
                self.config.prediction_type,
                alpha_prod,
                sample,
                model_output,
            )?,
            self.clip_sample_range,
        );
        let denoised = map2("LCM step", &original, sample, |x0, x| {
            c_out * x0 + c_skip * x
        })?;
        if index + 1 == self.steps {
            return Ok(denoised);
        }
        let noise = generator.randn(model_output.shape());
        let (sqrt_alpha_prev, sqrt_beta_prev) =
            (alpha_prod_prev.sqrt(), (1.0 - alpha_prod_prev).sqrt());
        map2("LCM step", &denoised, &noise, |d, n| {
            sqrt_alpha_prev * d + sqrt_beta_prev * n
        })
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
