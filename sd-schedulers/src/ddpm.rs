//! DDPM (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"), diffusers'
//! `DDPMScheduler`: ancestral sampling from the posterior q(x_{t−1} | x_t, x̂₀).

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::alpha_family;
use crate::alpha_timesteps::AlphaTimesteps;
use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::{clip, map2, map3};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("leading");

/// How the posterior's noise is scaled (`variance_type`; the learned ones need a model that
/// predicts its variance, which SD 1.5 does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FixedVariance {
    /// β̃_t, the true posterior variance.
    Small,
    /// β̃_t through exp(½·ln β̃_t): the same standard deviation computed another way.
    SmallLog,
    /// β_t, the forward-process variance.
    Large,
}

#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    /// ᾱ is 1 before the first training timestep.
    schedule: AlphaTimesteps,
    clip_sample_range: Option<f32>,
    variance: FixedVariance,
}

impl DdpmScheduler {
    /// From a `scheduler_config.json`, with `DDPMScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let schedule = AlphaTimesteps::new(config.noise_schedule(&DEFAULTS)?, true);
        let variance = match config.variance_type.as_deref().unwrap_or("fixed_small") {
            "fixed_small" => FixedVariance::Small,
            "fixed_small_log" => FixedVariance::SmallLog,
            "fixed_large" => FixedVariance::Large,
            other => {
                return Err(config.error(
                    "variance_type",
                    format!(
                        "`{other}` is not supported; expected fixed_small, fixed_small_log or \
                         fixed_large"
                    ),
                ));
            }
        };
        let clip_sample_range = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(DdpmScheduler {
            schedule,
            clip_sample_range,
            variance,
        })
    }
}

impl Scheduler for DdpmScheduler {
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
        let prev_timestep = self.schedule.next_timestep(index).unwrap_or(-1);
        let alpha_prod = self.schedule.alpha_prod(timestep);
        let alpha_prod_prev = self.schedule.alpha_prod(prev_timestep);
        let beta_prod = 1.0 - alpha_prod;
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let current_alpha = alpha_prod / alpha_prod_prev;
        let current_beta = 1.0 - current_alpha;

        let original = clip(
            alpha_family::predict_original(
                self.schedule.config.prediction_type,
                alpha_prod,
                sample,
                model_output,
            )?,
            self.clip_sample_range,
        );
        // Mean of the posterior q(x_{t−1} | x_t, x̂₀), eq. (7) of the DDPM paper.
        let original_coeff = (alpha_prod_prev.sqrt() * current_beta) / beta_prod;
        let sample_coeff = current_alpha.sqrt() * beta_prod_prev / beta_prod;
        if timestep <= 0 {
            return map2("DDPM step", &original, sample, |x0, x| {
                original_coeff * x0 + sample_coeff * x
            });
        }
        let noise = generator.randn(model_output.shape());
        let posterior_variance =
            ((1.0 - alpha_prod_prev) / (1.0 - alpha_prod) * current_beta).max(1e-20);
        let std_dev = match self.variance {
            FixedVariance::Small => posterior_variance.sqrt(),
            FixedVariance::SmallLog => (0.5 * posterior_variance.ln()).exp(),
            FixedVariance::Large => current_beta.sqrt(),
        };
        map3("DDPM step", &original, sample, &noise, |x0, x, n| {
            (original_coeff * x0 + sample_coeff * x) + std_dev * n
        })
    }
}
