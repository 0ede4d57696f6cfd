//! Latent Consistency Models (Luo et al. 2023), diffusers' `LCMScheduler`: for LCM-distilled
//! UNets (or an LCM-LoRA), a few steps each jump to the consistency model's x̂₀ and re-noise it
//! to the next timestep with fresh noise.

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::alpha_family;
use crate::alpha_timesteps::AlphaTimesteps;
use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::{clip, map2};

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
    schedule: AlphaTimesteps,
    clip_sample_range: Option<f32>,
    /// Length of the distillation schedule the inference timesteps are picked from.
    original_inference_steps: usize,
    timestep_scaling: f32,
}

impl LcmScheduler {
    /// From a `scheduler_config.json`, with `LCMScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        let original_inference_steps = config.original_inference_steps.unwrap_or(50);
        let clip_sample_range = config
            .clip_sample
            .unwrap_or(false)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(LcmScheduler {
            schedule: AlphaTimesteps::new(resolved, config.set_alpha_to_one.unwrap_or(true)),
            clip_sample_range,
            original_inference_steps,
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0) as f32,
        })
    }
}

impl Scheduler for LcmScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let timesteps = self
            .schedule
            .distilled(steps, self.original_inference_steps, "LCM")?;
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
        // The last step re-noises to its own timestep, which `prev` then never uses.
        let prev_timestep = self.schedule.next_timestep(index).unwrap_or(timestep);
        let alpha_prod = self.schedule.alpha_prod(timestep);
        let alpha_prod_prev = self.schedule.alpha_prod(prev_timestep);

        // Boundary-condition scalings c_skip, c_out of the consistency function.
        let scaled_t = timestep as f32 * self.timestep_scaling;
        let c_skip = SIGMA_DATA * SIGMA_DATA / (scaled_t * scaled_t + SIGMA_DATA * SIGMA_DATA);
        let c_out = scaled_t / (scaled_t * scaled_t + SIGMA_DATA * SIGMA_DATA).sqrt();

        let original = clip(
            alpha_family::predict_original(
                self.schedule.config.prediction_type,
                alpha_prod,
                sample,
                model_output,
            )?,
            self.clip_sample_range,
        );
        let denoised = map2("LCM step", &original, sample, |x0, x| {
            c_out * x0 + c_skip * x
        })?;
        if index + 1 == self.schedule.steps() {
            return Ok(denoised);
        }
        let noise = generator.randn(model_output.shape());
        let (sqrt_alpha_prev, sqrt_beta_prev) =
            (alpha_prod_prev.sqrt(), (1.0 - alpha_prod_prev).sqrt());
        map2("LCM step", &denoised, &noise, |d, n| {
            sqrt_alpha_prev * d + sqrt_beta_prev * n
        })
    }
}
