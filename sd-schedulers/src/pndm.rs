//! PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"),
//! diffusers' `PNDMScheduler` with `skip_prk_steps` — the PLMS sampler SD 1.5 ships with.
//!
//! A linear multistep method: the noise estimates of up to four past steps are combined with
//! Adams–Bashforth weights. The warm-up uses a second evaluation at the second timestep, which is
//! why that timestep appears twice in [`timesteps`](Scheduler::timesteps).

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::alpha_timesteps::AlphaTimesteps;
use crate::config::{ClassDefaults, PredictionType, SchedulerConfig};
use crate::elementwise::{map2, map3};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("leading");

#[derive(Debug, Clone)]
pub struct PndmScheduler {
    schedule: AlphaTimesteps,
    /// Model evaluations so far in this run.
    counter: usize,
    /// Past noise estimates, oldest first (at most four kept).
    history: Vec<HostTensor>,
    /// The sample the warm-up step started from; its second evaluation restarts there.
    warmup_sample: Option<HostTensor>,
}

impl PndmScheduler {
    /// From a `scheduler_config.json`, with `PNDMScheduler`'s defaults for missing keys.
    ///
    /// Only the PLMS variant is implemented: a config with `skip_prk_steps` false (diffusers'
    /// class default; SD 1.5's file sets it true) is refused.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        config.require_noise_prediction(resolved.prediction_type)?;
        if !config.skip_prk_steps.unwrap_or(false) {
            return Err(config.error(
                "skip_prk_steps",
                "the Runge–Kutta warm-up (skip_prk_steps = false, the PNDMScheduler default) \
                 is not supported; set it to true for PLMS",
            ));
        }
        Ok(PndmScheduler {
            schedule: AlphaTimesteps::new(resolved, config.set_alpha_to_one.unwrap_or(false)),
            counter: 0,
            history: Vec::new(),
            warmup_sample: None,
        })
    }

    /// Formula (9) of the PNDM paper: the sample at `prev_timestep` from the one at `timestep`
    /// given a noise estimate.
    fn previous_sample(
        &self,
        sample: &HostTensor,
        timestep: i64,
        prev_timestep: i64,
        epsilon: &HostTensor,
    ) -> Result<HostTensor> {
        let alpha_prod = self.schedule.alpha_prod(timestep);
        let alpha_prod_prev = self.schedule.alpha_prod(prev_timestep);
        let beta_prod = 1.0 - alpha_prod;
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let epsilon = match self.schedule.config.prediction_type {
            PredictionType::VPrediction => {
                let (sqrt_alpha, sqrt_beta) = (alpha_prod.sqrt(), beta_prod.sqrt());
                map2("PNDM step", epsilon, sample, |v, x| {
                    sqrt_alpha * v + sqrt_beta * x
                })?
            }
            _ => epsilon.clone(),
        };
        let sample_coeff = (alpha_prod_prev / alpha_prod).sqrt();
        let epsilon_denom =
            alpha_prod * beta_prod_prev.sqrt() + (alpha_prod * beta_prod * alpha_prod_prev).sqrt();
        let alpha_diff = alpha_prod_prev - alpha_prod;
        map2("PNDM step", sample, &epsilon, |x, e| {
            sample_coeff * x - alpha_diff * e / epsilon_denom
        })
    }
}

impl Scheduler for PndmScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let mut timesteps = self.schedule.spaced(steps)?;
        // PLMS evaluates the second timestep twice during warm-up.
        if timesteps.len() >= 2 {
            timesteps.insert(2, timesteps[1]);
        }
        self.schedule.set(steps, &timesteps);
        self.counter = 0;
        self.history.clear();
        self.warmup_sample = None;
        Ok(())
    }

    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        _generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        self.schedule.check_step(index, model_output, sample)?;
        let stride = self.schedule.stride();
        let mut timestep = self.schedule.timestep(index);
        let mut prev_timestep = timestep - stride;
        if self.counter == 1 {
            // The warm-up's second evaluation, at t − stride, completes the step from t.
            prev_timestep = timestep;
            timestep += stride;
        } else {
            if self.history.len() == 4 {
                self.history.remove(0);
            }
            self.history.push(model_output.clone());
        }

        let h = &self.history;
        let n = h.len();
        let mut from = sample.clone();
        let epsilon = match (n, self.counter) {
            (1, 0) => {
                self.warmup_sample = Some(sample.clone());
                model_output.clone()
            }
            (1, 1) => {
                if let Some(start) = self.warmup_sample.take() {
                    from = start;
                }
                map2("PLMS", model_output, &h[0], |e, e1| (e + e1) / 2.0)?
            }
            (2, _) => map2("PLMS", &h[1], &h[0], |e1, e2| (3.0 * e1 - e2) / 2.0)?,
            (3, _) => map3("PLMS", &h[2], &h[1], &h[0], |e1, e2, e3| {
                (23.0 * e1 - 16.0 * e2 + 5.0 * e3) / 12.0
            })?,
            _ => {
                let third = map3("PLMS", &h[3], &h[2], &h[1], |e1, e2, e3| {
                    55.0 * e1 - 59.0 * e2 + 37.0 * e3
                })?;
                let one_24th = (1.0f64 / 24.0) as f32;
                map2("PLMS", &third, &h[0], |s, e4| one_24th * (s - 9.0 * e4))?
            }
        };
        let prev = self.previous_sample(&from, timestep, prev_timestep, &epsilon)?;
        self.counter += 1;
        Ok(prev)
    }
}
