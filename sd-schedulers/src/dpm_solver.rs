//! DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models"), diffusers' `DPMSolverMultistepScheduler` (its order-2
//! setup is what diffusers' docs call "DPM++ 2M"; A1111's names run k-diffusion, `ksampler/`).
//!
//! Works in half log-SNR λ = ln(α_t/σ_t): each step integrates the data prediction x̂₀
//! exactly in λ, with a linear (order 2) or quadratic (order 3) fit through past x̂₀. The SDE
//! variant adds fresh noise every step.

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::{BetaSchedule, ClassDefaults, SchedulerConfig};
use crate::elementwise::{map2, map3};
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas::{FinalSigma, SigmaBounds};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

/// Fewer steps than this: the last two steps drop to lower order for stability.
const LOWER_ORDER_FINAL_BELOW: usize = 15;

/// `algorithm_type` of both DPM-Solver classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// `dpmsolver++`: the ODE solver.
    Ode,
    /// `sde-dpmsolver++`: the SDE solver, one `randn` per step.
    Sde,
}

impl Algorithm {
    pub(crate) fn from_config(config: &SchedulerConfig) -> Result<Self> {
        match config.algorithm_type.as_deref().unwrap_or("dpmsolver++") {
            // diffusers maps the retired `deis` name to DPM-Solver++ too.
            "dpmsolver++" | "deis" => Ok(Algorithm::Ode),
            "sde-dpmsolver++" => Ok(Algorithm::Sde),
            other => Err(config.error(
                "algorithm_type",
                format!("`{other}` is not supported; expected dpmsolver++ or sde-dpmsolver++"),
            )),
        }
    }
}

/// How the higher-order updates use the differences of past predictions (`solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecondOrder {
    Midpoint,
    Heun,
}

impl SecondOrder {
    pub(crate) fn from_config(config: &SchedulerConfig) -> Result<Self> {
        match config.solver_type.as_deref().unwrap_or("midpoint") {
            // diffusers maps the other solvers' names to midpoint.
            "midpoint" | "logrho" | "bh1" | "bh2" => Ok(SecondOrder::Midpoint),
            "heun" => Ok(SecondOrder::Heun),
            other => Err(config.error(
                "solver_type",
                format!("`{other}` is not supported; expected midpoint or heun"),
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DpmSolverScheduler {
    schedule: SigmaTimesteps,
    solver_order: usize,
    algorithm: Algorithm,
    second_order: SecondOrder,
    lower_order_final: bool,
    karras: bool,
    /// The last `solver_order` data predictions x̂₀, oldest first.
    history: Vec<HostTensor>,
    /// Steps taken so far, capped at `solver_order` (warm-up uses lower orders).
    lower_order_nums: usize,
}

impl DpmSolverScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0 (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `DPMSolverMultistepScheduler`'s defaults for missing
    /// keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=3).contains(&solver_order) {
            return Err(config.error(
                "solver_order",
                format!("must be 1, 2 or 3, got {solver_order}"),
            ));
        }
        let algorithm = Algorithm::from_config(config)?;
        let second_order = SecondOrder::from_config(config)?;
        if let Some(v) = config.final_sigmas_type.as_deref().filter(|v| *v != "zero") {
            return Err(config.error(
                "final_sigmas_type",
                format!("`{v}` is not supported, only `zero`"),
            ));
        }
        if let Some(v) = config.lambda_min_clipped.filter(|v| v.is_finite()) {
            return Err(config.error(
                "lambda_min_clipped",
                format!("{v} is not supported, only -inf"),
            ));
        }
        if let Some(v) = config.variance_type.as_deref() {
            return Err(config.error("variance_type", format!("`{v}` is not supported")));
        }
        Ok(DpmSolverScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::VariancePreserving),
            solver_order,
            algorithm,
            second_order,
            // `euler_at_final` needs no field: with the final σ = 0 (the only final_sigmas_type
            // supported) the last step is first order anyway.
            lower_order_final: config.lower_order_final.unwrap_or(true),
            karras: config.use_karras_sigmas.unwrap_or(false),
            history: Vec::new(),
            lower_order_nums: 0,
        })
    }

    /// One step from position `i` to `i + 1` of the given order: the newest x̂₀ (D0) plus, for
    /// orders 2 and 3, the scaled differences D1, D2 of the x̂₀ history in λ; `noise` for the SDE.
    fn update(
        &self,
        i: usize,
        order: usize,
        sample: &HostTensor,
        noise: Option<&HostTensor>,
    ) -> Result<HostTensor> {
        let (alpha_t, sigma_t, lambda_t) = self.schedule.vp_coordinates(i + 1);
        let (_, sigma_s0, lambda_s0) = self.schedule.vp_coordinates(i);
        let h = lambda_t - lambda_s0;
        let m = &self.history;
        let m0 = &m[m.len() - 1];

        // Coefficients of x, D0, D1, D2 (ODE) — or of the SDE's exp(−2h) form.
        let (sample_coeff, c0, c1, c2) = match self.algorithm {
            Algorithm::Ode => {
                let phi = (-h).exp() - 1.0;
                let c1 = match (order, self.second_order) {
                    (2, SecondOrder::Midpoint) => -(0.5 * (alpha_t * phi)),
                    _ => alpha_t * (phi / h + 1.0),
                };
                let c2 = -(alpha_t * (((-h).exp() - 1.0 + h) / (h * h) - 0.5));
                (sigma_t / sigma_s0, -(alpha_t * phi), c1, c2)
            }
            Algorithm::Sde => {
                let decay = 1.0 - (-2.0 * h).exp();
                let c1 = match (order, self.second_order) {
                    (2, SecondOrder::Midpoint) => 0.5 * (alpha_t * decay),
                    _ => alpha_t * (decay / (-2.0 * h) + 1.0),
                };
                let c2 =
                    alpha_t * ((1.0 - (-2.0 * h).exp() - 2.0 * h) / ((2.0 * h) * (2.0 * h)) - 0.5);
                (sigma_t / sigma_s0 * (-h).exp(), alpha_t * decay, c1, c2)
            }
        };

        let mut x = map2("DPM-Solver step", sample, m0, |x, d0| {
            sample_coeff * x + c0 * d0
        })?;
        if order >= 2 {
            let (_, _, lambda_s1) = self.schedule.vp_coordinates(i - 1);
            let r0 = (lambda_s0 - lambda_s1) / h;
            let m1 = &m[m.len() - 2];
            let d1_0 = map2("DPM-Solver step", m0, m1, |a, b| (1.0 / r0) * (a - b))?;
            if order == 2 {
                x = map2("DPM-Solver step", &x, &d1_0, |x, d1| x + c1 * d1)?;
            } else {
                let (_, _, lambda_s2) = self.schedule.vp_coordinates(i - 2);
                let r1 = (lambda_s1 - lambda_s2) / h;
                let m2 = &m[m.len() - 3];
                let d1_1 = map2("DPM-Solver step", m1, m2, |a, b| (1.0 / r1) * (a - b))?;
                let (w1, w2) = (r0 / (r0 + r1), 1.0 / (r0 + r1));
                x = map3("DPM-Solver step", &x, &d1_0, &d1_1, |x, a, b| {
                    let d1 = a + w1 * (a - b);
                    let d2 = w2 * (a - b);
                    x + c1 * d1 + c2 * d2
                })?;
            }
        }
        if let Some(noise) = noise {
            let noise_coeff = sigma_t * (1.0 - (-2.0 * h).exp()).sqrt();
            x = map2("DPM-Solver step", &x, noise, |x, n| x + noise_coeff * n)?;
        }
        Ok(x)
    }
}

impl Scheduler for DpmSolverScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let karras = self.karras.then_some(SigmaBounds::default());
        let round = self.schedule.config.beta_schedule != BetaSchedule::SquaredCosCapV2;
        self.schedule
            .set_multistep(steps, karras, round, FinalSigma::Zero)?;
        self.history.clear();
        self.lower_order_nums = 0;
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
        let n = self.schedule.timesteps().len();
        // The final σ is 0, where only a first-order step is finite; short schedules also
        // step down to order 2 just before it.
        let last_first_order = index == n - 1;
        let second_last_lower =
            index + 2 == n && self.lower_order_final && n < LOWER_ORDER_FINAL_BELOW;

        let prediction =
            self.schedule
                .data_prediction("DPM-Solver step", index, sample, model_output)?;
        if self.history.len() == self.solver_order {
            self.history.remove(0);
        }
        self.history.push(prediction);

        let noise = match self.algorithm {
            Algorithm::Sde => Some(generator.randn(model_output.shape())),
            Algorithm::Ode => None,
        };
        let order = if self.solver_order == 1 || self.lower_order_nums < 1 || last_first_order {
            1
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || second_last_lower {
            2
        } else {
            3
        };
        let prev = self.update(index, order, sample, noise.as_ref())?;
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        Ok(prev)
    }
}
