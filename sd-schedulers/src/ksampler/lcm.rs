//! AUTOMATIC1111's `LCM` sampler (`modules/sd_samplers_lcm.py`): k-diffusion style sampling
//! with A1111's LCM model wrapper, which differs from diffusers' `LCMScheduler`:
//!
//! - The model's σ table is cut to LCM's 50 original timesteps: ᾱ at 19, 39, …, 999
//!   (`alphas_cumprod[999 − 20k]`), σ = √((1 − ᾱ)/ᾱ).
//! - t(σ) is quantised: the nearest table entry in ln σ, as timestep `20·k + 19`; σ(t) maps back
//!   through `(t − 19)/20` and k-diffusion's ln-σ interpolation.
//! - "Automatic" (and "Uniform"): `steps` timesteps uniform from t(σ_max) = 999 to t(σ_min) = 19,
//!   σ of each, then 0. Schedule types that only need σ_min/σ_max or the table (Karras,
//!   Exponential, Polyexponential, KL Optimal, Align Your Steps, Simple, DDIM, Beta) use the
//!   50-entry table's; SGM Uniform and Normal would go through the quantised t maps and are
//!   refused.
//! - Model: ε at the quantised t from `x·c_in` (c_in = 1/√(σ² + 1)); denoised = x − σ·ε, then
//!   LCM's boundary condition: `c_out·denoised + c_skip·x` with s = 10·t, c_skip = ¼/(s² + ¼),
//!   c_out = s/√(s² + ¼). Guidance on these outputs equals guidance on ε (both affine in ε
//!   with the same x).
//! - Step: `x = denoised`, plus σ_{i+1}·`randn` from the image's generator while σ_{i+1} > 0.
//! - Start `x = noise · σ₀`; img2img as A1111's other k-diffusion samplers.

use sd_core::{Error, HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use super::ScheduleType;
use super::model_sigmas::{ModelSigmas, model_alphas_cumprod};
use crate::config::{PredictionType, SchedulerConfig};
use crate::elementwise::{check_index, check_step, check_steps, map2};
use crate::k_diffusion;

/// LCM's original timesteps.
const ORIGINAL_STEPS: usize = 50;
/// A1111's LCM wrapper assumes 1000 training timesteps.
const TRAIN_TIMESTEPS: usize = 1000;
/// Training timesteps between two LCM timesteps.
const SKIP: usize = TRAIN_TIMESTEPS / ORIGINAL_STEPS;
/// LCM's σ_data in its boundary condition.
const SIGMA_DATA: f32 = 0.5;
/// LCM's timestep scaling of the boundary condition.
const TIMESTEP_SCALING: f32 = 10.0;

/// A1111's LCM sampler (see the module docs).
#[derive(Debug, Clone)]
pub struct A1111LcmSampler {
    schedule: ScheduleType,
    table: ModelSigmas,
    plan: Plan,
}

#[derive(Debug, Clone, Default)]
struct Plan {
    steps: usize,
    /// σ of each step, then the last (0 for most schedule types).
    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
}

impl A1111LcmSampler {
    /// A sampler over the noise schedule of `config` on `schedule` (Automatic: LCM's own).
    pub fn new(config: &SchedulerConfig, schedule: ScheduleType) -> Result<Self> {
        let noise = config.noise_schedule(&super::DEFAULTS)?;
        if noise.prediction_type != PredictionType::Epsilon {
            return Err(Error::invalid_argument(
                "prediction_type",
                "A1111's LCM is reproduced for ε-prediction models only",
            ));
        }
        if noise.num_train_timesteps != TRAIN_TIMESTEPS {
            return Err(Error::invalid_argument(
                "num_train_timesteps",
                format!(
                    "A1111's LCM assumes 1000 training timesteps; the config has {}",
                    noise.num_train_timesteps
                ),
            ));
        }
        if matches!(schedule, ScheduleType::SgmUniform | ScheduleType::Normal) {
            return Err(Error::invalid_argument(
                "schedule type",
                format!(
                    "{} with A1111's LCM (through its quantised timesteps) is not reproduced",
                    schedule.label()
                ),
            ));
        }
        let full = model_alphas_cumprod(&noise.beta_schedule, noise.num_train_timesteps);
        let cut: Vec<f32> = (0..ORIGINAL_STEPS)
            .map(|k| full[SKIP - 1 + SKIP * k])
            .collect();
        Ok(A1111LcmSampler {
            schedule,
            table: ModelSigmas::from_alphas_cumprod(&cut),
            plan: Plan::default(),
        })
    }

    /// The σ schedule of the current run.
    pub fn sigmas(&self) -> &[f32] {
        &self.plan.sigmas
    }

    /// LCM's quantised t(σ): the nearest table entry in ln σ, as a training timestep.
    fn sigma_to_t(&self, sigma: f32) -> usize {
        let log_sigma = sigma.ln();
        let nearest = self
            .table
            .sigmas()
            .iter()
            .map(|s| (log_sigma - s.ln()).abs())
            .enumerate()
            // argmin: the first of equal distances.
            .fold(
                (0, f32::INFINITY),
                |best, (i, d)| {
                    if d < best.1 { (i, d) } else { best }
                },
            )
            .0;
        nearest * SKIP + (SKIP - 1)
    }

    /// LCM's own schedule: `steps` timesteps uniform from t(σ_max) to t(σ_min), σ of each.
    fn own_sigmas(&self, steps: usize) -> Vec<f32> {
        let start = self.sigma_to_t(self.table.sigma_max()) as f32;
        let end = self.sigma_to_t(self.table.sigma_min()) as f32;
        let mut sigmas: Vec<f32> = crate::noise_schedule::torch_linspace_f32(start, end, steps)
            .into_iter()
            .map(|t| {
                let k =
                    ((t - (SKIP - 1) as f32) / SKIP as f32).clamp(0.0, (ORIGINAL_STEPS - 1) as f32);
                self.table.t_to_sigma(k)
            })
            .collect();
        sigmas.push(0.0);
        sigmas
    }

    /// The boundary condition's (c_skip, c_out) at σ.
    fn boundary(&self, sigma: f32) -> (f32, f32) {
        let scaled = self.sigma_to_t(sigma) as f32 * TIMESTEP_SCALING;
        let denominator = scaled * scaled + SIGMA_DATA * SIGMA_DATA;
        (
            SIGMA_DATA * SIGMA_DATA / denominator,
            scaled / denominator.sqrt(),
        )
    }
}

impl Scheduler for A1111LcmSampler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(steps, TRAIN_TIMESTEPS)?;
        let sigmas = match self.schedule {
            ScheduleType::Automatic | ScheduleType::Uniform => self.own_sigmas(steps),
            other => other.sigmas(&self.table, steps),
        };
        let timesteps = sigmas[..sigmas.len() - 1]
            .iter()
            .map(|&s| self.sigma_to_t(s) as f64)
            .collect();
        self.plan = Plan {
            steps,
            sigmas,
            timesteps,
        };
        Ok(())
    }

    fn schedule(&self) -> &dyn ScheduleState {
        &self.plan
    }

    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        check_step(index, self.plan.timesteps.len(), model_output, sample)?;
        let (sigma, next) = (self.plan.sigmas[index], self.plan.sigmas[index + 1]);
        let (c_skip, c_out) = self.boundary(sigma);
        let minus_sigma = -sigma;
        let denoised = map2("LCM denoise", sample, model_output, |x, e| {
            c_out * (x + e * minus_sigma) + c_skip * x
        })?;
        if next > 0.0 {
            let noise = generator.randn(sample.shape());
            map2("LCM noise", &denoised, &noise, |d, n| d + next * n)
        } else {
            Ok(denoised)
        }
    }

    /// A1111's img2img rule: of `steps`, run the last `⌊min(strength, 0.999)·steps⌋ + 1`.
    fn start_index(&self, strength: f64) -> Result<usize> {
        super::a1111_start_step(strength, self.plan.steps)
    }
}

impl ScheduleState for Plan {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.sigmas.first().copied().unwrap_or(1.0)
    }

    /// `x · c_in`, c_in = 1/√(σ² + 1).
    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        let sigma = self.sigmas[index];
        let c_in = 1.0 / (sigma * sigma + 1.0).sqrt();
        Ok(sample.mapv(|x| x * c_in))
    }

    /// `x₀ + σ·ε` (A1111's img2img start).
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        k_diffusion::add_noise(self.sigmas[index], original, noise)
    }
}
