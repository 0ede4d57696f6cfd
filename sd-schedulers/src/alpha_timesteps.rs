//! The state and bookkeeping the ᾱ-parameterised samplers (DDIM, DDPM, PNDM, LCM) share: the
//! training noise schedule, the inference timesteps, and, as their [`ScheduleState`], the
//! `Scheduler` methods that only read them (unscaled model input, forward noising to a
//! timestep's ᾱ).

use sd_core::{Error, HostTensor, Result, ScheduleState};

use crate::alpha_family;
use crate::config::NoiseScheduleConfig;
use crate::elementwise::{check_index, check_step, check_steps};
use crate::noise_schedule::NoiseSchedule;
use crate::spacing;

#[derive(Debug, Clone)]
pub(crate) struct AlphaTimesteps {
    pub config: NoiseScheduleConfig,
    noise: NoiseSchedule,
    /// ᾱ "before" the first training timestep (1, or ᾱ₀ when `set_alpha_to_one` is false).
    final_alpha_cumprod: f32,
    steps: usize,
    timesteps: Vec<f64>,
}

impl AlphaTimesteps {
    /// No inference timesteps yet; `set_alpha_to_one` picks ᾱ before the first timestep.
    pub fn new(config: NoiseScheduleConfig, set_alpha_to_one: bool) -> Self {
        let noise = NoiseSchedule::new(&config.beta_schedule, config.num_train_timesteps);
        let final_alpha_cumprod = if set_alpha_to_one {
            1.0
        } else {
            noise.alphas_cumprod[0]
        };
        AlphaTimesteps {
            config,
            noise,
            final_alpha_cumprod,
            steps: 0,
            timesteps: Vec::new(),
        }
    }

    /// The configured spacing's integer timesteps for `steps` inference steps, descending.
    pub fn spaced(&self, steps: usize) -> Result<Vec<i64>> {
        check_steps(steps, self.config.num_train_timesteps)?;
        Ok(spacing::discrete(
            self.config.timestep_spacing,
            self.config.num_train_timesteps,
            steps,
            self.config.steps_offset,
        ))
    }

    /// The consistency-distilled samplers' timesteps (LCM, TCD): the distillation schedule
    /// k−1, 2k−1, …, T−1 (k = T / `original` steps), descending, of which inference takes `steps`
    /// evenly spaced entries, starting with the noisiest. `class` names the sampler in errors.
    pub fn distilled(&self, steps: usize, original: usize, class: &str) -> Result<Vec<i64>> {
        check_steps(steps, self.config.num_train_timesteps)?;
        if steps > original {
            return Err(Error::invalid_argument(
                "steps",
                format!(
                    "{steps} is more than the {original} steps of the {class} distillation \
                     schedule (original_inference_steps)"
                ),
            ));
        }
        let k = (self.config.num_train_timesteps / original) as i64;
        let schedule: Vec<i64> = (1..=original as i64).rev().map(|i| i * k - 1).collect();
        let stride = original as f64 / steps as f64;
        Ok((0..steps)
            .map(|i| schedule[(i as f64 * stride).floor() as usize])
            .collect())
    }

    /// Start a run of `steps` inference steps evaluated at `timesteps`.
    pub fn set(&mut self, steps: usize, timesteps: &[i64]) {
        self.steps = steps;
        self.timesteps = timesteps.iter().map(|&t| t as f64).collect();
    }

    /// The nominal distance between consecutive inference timesteps, T / steps.
    pub fn stride(&self) -> i64 {
        (self.config.num_train_timesteps / self.steps) as i64
    }

    /// The training timestep of evaluation `index` (checked by the caller).
    pub fn timestep(&self, index: usize) -> i64 {
        self.timesteps[index] as i64
    }

    /// The training timestep of evaluation `index + 1`, none after the last.
    pub fn next_timestep(&self, index: usize) -> Option<i64> {
        self.timesteps.get(index + 1).map(|&t| t as i64)
    }

    /// ᾱ at `timestep`, the final ᾱ before the first training timestep.
    pub fn alpha_prod(&self, timestep: i64) -> f32 {
        self.noise
            .alpha_cumprod(timestep)
            .unwrap_or(self.final_alpha_cumprod)
    }

    /// `index` names an evaluation and the two tensors have one shape.
    pub fn check_step(
        &self,
        index: usize,
        model_output: &HostTensor,
        sample: &HostTensor,
    ) -> Result<()> {
        check_step(index, self.timesteps.len(), model_output, sample)
    }
}

impl ScheduleState for AlphaTimesteps {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn steps(&self) -> usize {
        self.steps
    }

    /// The initial noise is standard normal.
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// These samplers feed the model the sample as it is.
    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        Ok(sample.clone())
    }

    /// Forward diffusion to the ᾱ of evaluation `index`.
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        alpha_family::add_noise(self.alpha_prod(self.timestep(index)), original, noise)
    }
}
