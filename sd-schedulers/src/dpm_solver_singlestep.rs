//! Singlestep DPM-Solver++ (Lu et al. 2022), diffusers' `DPMSolverSinglestepScheduler`.
//!
//! Where the multistep solver (`dpm_solver.rs`) fits its polynomial through the data predictions
//! x̂₀ of earlier *steps*, the singlestep solver spends its model evaluations inside one step: an
//! order-k group of k evaluations starts with a first-order move, and its last evaluation jumps
//! from the group's starting sample with all k predictions. The order of each evaluation comes
//! from a fixed pattern (1, 2, 1, 2, … for order 2), lowered at the end as diffusers lowers it.
//!
//! Supported: `dpmsolver++` and `sde-dpmsolver++` (one `randn` per evaluation), solver types
//! `midpoint` and `heun`, orders 1–3, Karras σ, `final_sigmas_type` `zero` and `sigma_min`. Like
//! diffusers, the class ignores `timestep_spacing` (always linspace).

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::{BetaSchedule, ClassDefaults, SchedulerConfig, TimestepSpacing};
use crate::dpm_solver::{Algorithm, SecondOrder};
use crate::elementwise::map2;
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas::{FinalSigma, SigmaBounds};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

#[derive(Debug, Clone)]
pub struct DpmSolverSinglestepScheduler {
    schedule: SigmaTimesteps,
    solver_order: usize,
    algorithm: Algorithm,
    solver_type: SecondOrder,
    /// diffusers turns this on for good (in its config) the first time a schedule needs it.
    lower_order_final: bool,
    karras: bool,
    final_sigma: FinalSigma,
    /// The order of each evaluation.
    orders: Vec<usize>,
    /// The last `solver_order` data predictions, oldest first; `None` before the first steps.
    predictions: Vec<Option<HostTensor>>,
    /// The sample the current group started from.
    group_start: Option<HostTensor>,
}

impl DpmSolverSinglestepScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final σ
    /// (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `DPMSolverSinglestepScheduler`'s defaults for
    /// missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let mut resolved = config.noise_schedule(&DEFAULTS)?;
        // This class always spaces its timesteps linspace, whatever the config says.
        resolved.timestep_spacing = TimestepSpacing::Linspace;
        if resolved.beta_schedule == BetaSchedule::SquaredCosCapV2 {
            // diffusers truncates Karras timesteps there in the multistep class only; keep the
            // two classes' behaviour apart by refusing what we have not checked.
            if config.use_karras_sigmas == Some(true) {
                return Err(config.error(
                    "use_karras_sigmas",
                    "is not supported with beta_schedule = squaredcos_cap_v2 by this scheduler",
                ));
            }
        }
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=3).contains(&solver_order) {
            return Err(config.error(
                "solver_order",
                format!("must be 1, 2 or 3, got {solver_order}"),
            ));
        }
        let algorithm = Algorithm::from_config(config)?;
        let solver_type = SecondOrder::from_config(config)?;
        let final_sigma = match config.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => FinalSigma::Zero,
            "sigma_min" => FinalSigma::TrainingMin,
            other => {
                return Err(config.error(
                    "final_sigmas_type",
                    format!("`{other}` is not supported; expected zero or sigma_min"),
                ));
            }
        };
        if let Some(v) = config.lambda_min_clipped.filter(|v| v.is_finite()) {
            return Err(config.error(
                "lambda_min_clipped",
                format!("{v} is not supported, only -inf"),
            ));
        }
        if let Some(v) = config.variance_type.as_deref() {
            return Err(config.error("variance_type", format!("`{v}` is not supported")));
        }
        Ok(DpmSolverSinglestepScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::VariancePreserving),
            solver_order,
            algorithm,
            solver_type,
            lower_order_final: config.lower_order_final.unwrap_or(false),
            karras: config.use_karras_sigmas.unwrap_or(false),
            final_sigma,
            orders: Vec::new(),
            predictions: Vec::new(),
            group_start: None,
        })
    }

    /// diffusers' `get_order_list`: the order of each of `steps` evaluations.
    fn order_pattern(&self, steps: usize) -> Vec<usize> {
        let order = self.solver_order;
        let mut orders: Vec<usize> = if self.lower_order_final {
            let (full, tail): (usize, &[usize]) = match (order, steps % order) {
                (3, 0) => (steps / 3 - 1, &[1, 2, 1]),
                (3, 1) => (steps / 3, &[1]),
                (3, _) => (steps / 3, &[1, 2]),
                (2, 0) => (steps / 2 - 1, &[1, 1]),
                (2, _) => (steps / 2, &[1]),
                _ => (0, &[]),
            };
            let groups = if order == 1 { steps } else { full };
            let group: Vec<usize> = (1..=order).collect();
            let mut orders: Vec<usize> =
                group.iter().copied().cycle().take(groups * order).collect();
            orders.extend_from_slice(tail);
            orders
        } else {
            (1..=order).cycle().take(steps / order * order).collect()
        };
        if self.final_sigma == FinalSigma::Zero
            && let Some(last) = orders.last_mut()
        {
            *last = 1;
        }
        orders
    }

    /// The group's jump to position `i + 1` from `start` (the sample at the group's first
    /// position), with the group's data predictions (oldest first, one per evaluation: their
    /// count is the order) and `noise` for the SDE.
    fn update(
        &self,
        i: usize,
        group: &[&HostTensor],
        start: &HostTensor,
        noise: Option<&HostTensor>,
    ) -> Result<HostTensor> {
        let order = group.len();
        let op = "DPM-Solver singlestep";
        let (alpha_t, sigma_t, lambda_t) = self.schedule.vp_coordinates(i + 1);
        // The group started at position s = i + 1 − order.
        let s = i + 1 - order;
        let (_, sigma_s, lambda_s) = self.schedule.vp_coordinates(s);
        let h = lambda_t - lambda_s;
        // m(0): the newest prediction.
        let m = |k: usize| group[order - 1 - k];
        let d0 = m(order - 1);
        let (sample_coeff, c0) = match self.algorithm {
            Algorithm::Ode => (sigma_t / sigma_s, -(alpha_t * ((-h).exp() - 1.0))),
            Algorithm::Sde => (
                sigma_t / sigma_s * (-h).exp(),
                alpha_t * (1.0 - (-2.0 * h).exp()),
            ),
        };
        let mut x = map2(op, start, d0, |x, d| sample_coeff * x + c0 * d)?;
        // Coefficients of the D1 term (Heun; third-order midpoint uses it for D1_1) and of D2.
        let (phi1, phi2) = match self.algorithm {
            Algorithm::Ode => (
                alpha_t * (((-h).exp() - 1.0) / h + 1.0),
                -(alpha_t * (((-h).exp() - 1.0 + h) / (h * h) - 0.5)),
            ),
            Algorithm::Sde => (
                alpha_t * ((1.0 - (-2.0 * h).exp()) / (-2.0 * h) + 1.0),
                alpha_t * ((1.0 - (-2.0 * h).exp() + -2.0 * h) / ((-2.0 * h) * (-2.0 * h)) - 0.5),
            ),
        };
        if order == 2 {
            let (_, _, lambda_s0) = self.schedule.vp_coordinates(i);
            let r0 = (lambda_s0 - lambda_s) / h;
            let d1 = map2(op, m(0), m(1), |a, b| (1.0 / r0) * (a - b))?;
            let c1 = match (self.solver_type, self.algorithm) {
                (SecondOrder::Midpoint, Algorithm::Ode) => -(0.5 * (alpha_t * ((-h).exp() - 1.0))),
                (SecondOrder::Midpoint, Algorithm::Sde) => {
                    0.5 * (alpha_t * (1.0 - (-2.0 * h).exp()))
                }
                (SecondOrder::Heun, _) => phi1,
            };
            x = map2(op, &x, &d1, |x, d| x + c1 * d)?;
        } else if order == 3 {
            let (_, _, lambda_s0) = self.schedule.vp_coordinates(i);
            let (_, _, lambda_s1) = self.schedule.vp_coordinates(i - 1);
            let (r0, r1) = ((lambda_s0 - lambda_s) / h, (lambda_s1 - lambda_s) / h);
            let d1_0 = map2(op, m(1), m(2), |a, b| (1.0 / r1) * (a - b))?;
            let d1_1 = map2(op, m(0), m(2), |a, b| (1.0 / r0) * (a - b))?;
            match self.solver_type {
                SecondOrder::Midpoint => x = map2(op, &x, &d1_1, |x, d| x + phi1 * d)?,
                SecondOrder::Heun => {
                    let d1 = map2(op, &d1_0, &d1_1, |a, b| (r0 * a - r1 * b) / (r0 - r1))?;
                    let d2 = map2(op, &d1_1, &d1_0, |a, b| 2.0 * (a - b) / (r0 - r1))?;
                    x = map2(op, &x, &d1, |x, d| x + phi1 * d)?;
                    x = map2(op, &x, &d2, |x, d| x + phi2 * d)?;
                }
            }
        }
        if let Some(noise) = noise {
            let noise_coeff = sigma_t * (1.0 - (-2.0 * h).exp()).sqrt();
            x = map2(op, &x, noise, |x, n| x + noise_coeff * n)?;
        }
        Ok(x)
    }
}

impl Scheduler for DpmSolverSinglestepScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let karras = self.karras.then_some(SigmaBounds::default());
        self.schedule
            .set_multistep(steps, karras, true, self.final_sigma)?;
        if !steps.is_multiple_of(self.solver_order) || self.final_sigma == FinalSigma::Zero {
            self.lower_order_final = true;
        }
        self.orders = self.order_pattern(steps);
        self.predictions = vec![None; self.solver_order];
        self.group_start = None;
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
        let prediction =
            self.schedule
                .data_prediction("DPM-Solver singlestep", index, sample, model_output)?;
        self.predictions.remove(0);
        self.predictions.push(Some(prediction));
        let noise = match self.algorithm {
            Algorithm::Sde => Some(generator.randn(model_output.shape())),
            Algorithm::Ode => None,
        };
        // The pattern's order, lowered while too few predictions exist (img2img, first steps).
        let mut order = self.orders.get(index).copied().unwrap_or(1);
        while self.predictions[self.solver_order - order].is_none() {
            order -= 1;
        }
        if order == 1 {
            self.group_start = Some(sample.clone());
        }
        // The buffer fills from its end, so the last `order` entries are all present.
        let group: Vec<&HostTensor> = self.predictions[self.solver_order - order..]
            .iter()
            .flatten()
            .collect();
        let start = self.group_start.as_ref().unwrap_or(sample);
        self.update(index, &group, start, noise.as_ref())
    }
}
