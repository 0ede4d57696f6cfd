//! Trajectory Consistency Distillation (Zheng et al. 2024), diffusers' `TCDScheduler`: for
//! TCD-distilled UNets (or a TCD-LoRA). Like LCM it walks the distillation schedule, but each
//! step goes from the model's x̂₀ to an intermediate timestep s = ⌊(1 − γ)·t_prev⌋ along the
//! predicted trajectory, then re-noises from s to t_prev with fresh noise (γ = η; γ = 0 is
//! deterministic).
//!
//! η comes from [`SamplerOptions::eta`](crate::SamplerOptions::eta); unset, it is 0 as
//! `StableDiffusionPipeline` passes it (diffusers' TCD pipeline examples pass 0.3).

use sd_core::{Error, HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::alpha_family;
use crate::alpha_timesteps::AlphaTimesteps;
use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::map2;

const DEFAULTS: ClassDefaults = ClassDefaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "scaled_linear",
    timestep_spacing: "leading",
};

#[derive(Debug, Clone)]
pub struct TcdScheduler {
    schedule: AlphaTimesteps,
    /// Length of the distillation schedule the inference timesteps are picked from.
    original_inference_steps: usize,
    /// γ, the stochasticity: how far back along the trajectory each step re-noises from.
    gamma: f32,
}

impl TcdScheduler {
    /// From a `scheduler_config.json`, with `TCDScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        // diffusers' TCD takes `clip_sample` but never clips; so neither do we.
        Ok(TcdScheduler {
            schedule: AlphaTimesteps::new(resolved, config.set_alpha_to_one.unwrap_or(true)),
            original_inference_steps: config.original_inference_steps.unwrap_or(50),
            gamma: 0.0,
        })
    }

    /// γ (diffusers' `eta` argument of `step`), in [0, 1].
    pub fn with_gamma(mut self, gamma: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&gamma) {
            return Err(Error::invalid_argument(
                "eta",
                format!("TCD's γ (eta) must be in [0, 1], got {gamma}"),
            ));
        }
        self.gamma = gamma;
        Ok(self)
    }
}

impl Scheduler for TcdScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let timesteps = self
            .schedule
            .distilled(steps, self.original_inference_steps, "TCD")?;
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
        // After the last step diffusers targets t = 0 (not the final ᾱ).
        let prev_timestep = self.schedule.next_timestep(index).unwrap_or(0);
        // s = ⌊(1 − γ)·t_prev⌋, multiplied in f32 as torch does.
        let keep = (1.0 - f64::from(self.gamma)) as f32;
        let intermediate = (keep * prev_timestep as f32).floor() as i64;
        let alpha_prod = self.schedule.alpha_prod(timestep);
        let alpha_prod_prev = self.schedule.alpha_prod(prev_timestep);
        let alpha_prod_s = self.schedule.alpha_prod(intermediate);

        let prediction = self.schedule.config.prediction_type;
        let original =
            alpha_family::predict_original(prediction, alpha_prod, sample, model_output)?;
        let epsilon = alpha_family::predict_epsilon(prediction, alpha_prod, sample, model_output)?;
        let (sqrt_alpha_s, sqrt_beta_s) = (alpha_prod_s.sqrt(), (1.0 - alpha_prod_s).sqrt());
        let noised = map2("TCD step", &original, &epsilon, |x0, e| {
            sqrt_alpha_s * x0 + sqrt_beta_s * e
        })?;
        if self.gamma == 0.0 || index + 1 == self.schedule.steps() {
            return Ok(noised);
        }
        let noise = generator.randn(model_output.shape());
        let ratio = alpha_prod_prev / alpha_prod_s;
        let (keep_coeff, noise_coeff) = (ratio.sqrt(), (1.0 - ratio).sqrt());
        map2("TCD step", &noised, &noise, |x, n| {
            keep_coeff * x + noise_coeff * n
        })
    }
}
