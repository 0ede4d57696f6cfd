//! DEIS (Zhang & Chen 2022, "Fast Sampling of Diffusion Models with Exponential Integrator"),
//! diffusers' `DEISMultistepScheduler`: the log-ρ multistep variant (ρ = σ_t/α_t), the only
//! one diffusers implements.
//!
//! Each step integrates the noise prediction exactly in ρ with a polynomial fit through the last
//! one to three noise predictions (in ln ρ), like DPM-Solver in λ. The schedule ends at the
//! smallest training σ (with Karras σ: the last σ again), not at 0.

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::map2;
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas::{FinalSigma, SigmaBounds};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

/// Fewer steps than this: with `lower_order_final`, the last two steps drop to lower order.
const LOWER_ORDER_FINAL_BELOW: usize = 15;

#[derive(Debug, Clone)]
pub struct DeisScheduler {
    schedule: SigmaTimesteps,
    solver_order: usize,
    lower_order_final: bool,
    karras: bool,
    /// The last `solver_order` noise predictions, oldest first.
    history: Vec<HostTensor>,
    /// Steps taken so far, capped at `solver_order` (warm-up uses lower orders).
    lower_order_nums: usize,
}

impl DeisScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final σ
    /// (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `DEISMultistepScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=3).contains(&solver_order) {
            return Err(config.error(
                "solver_order",
                format!("must be 1, 2 or 3, got {solver_order}"),
            ));
        }
        // diffusers maps the DPM-Solver names to its one algorithm and solver type.
        if let Some(v) = config
            .algorithm_type
            .as_deref()
            .filter(|v| !["deis", "dpmsolver", "dpmsolver++"].contains(v))
        {
            return Err(config.error(
                "algorithm_type",
                format!("`{v}` is not supported; DEIS has only `deis`"),
            ));
        }
        if let Some(v) = config
            .solver_type
            .as_deref()
            .filter(|v| !["logrho", "midpoint", "heun", "bh1", "bh2"].contains(v))
        {
            return Err(config.error(
                "solver_type",
                format!("`{v}` is not supported; DEIS has only `logrho`"),
            ));
        }
        Ok(DeisScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::VariancePreserving),
            solver_order,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            karras: config.use_karras_sigmas.unwrap_or(false),
            history: Vec::new(),
            lower_order_nums: 0,
        })
    }

    /// The noise prediction DEIS integrates, recomputed from x̂₀ as diffusers does (so it
    /// carries the same rounding).
    fn noise_prediction(
        &self,
        index: usize,
        sample: &HostTensor,
        model_output: &HostTensor,
    ) -> Result<HostTensor> {
        let op = "DEIS step";
        let (alpha, sigma, _) = self.schedule.vp_coordinates(index);
        let original = self
            .schedule
            .data_prediction(op, index, sample, model_output)?;
        map2(op, sample, &original, |x, x0| (x - alpha * x0) / sigma)
    }

    /// ρ = σ_t/α_t at position `i` of the σ schedule, and α_t.
    fn rho(&self, i: usize) -> (f32, f32) {
        let (alpha, sigma, _) = self.schedule.vp_coordinates(i);
        (sigma / alpha, alpha)
    }

    /// One step from position `i` to `i + 1` of the given order.
    fn update(&self, i: usize, order: usize, sample: &HostTensor) -> Result<HostTensor> {
        let op = "DEIS step";
        let m = &self.history;
        let m0 = &m[m.len() - 1];
        let (alpha_t, sigma_t, lambda_t) = self.schedule.vp_coordinates(i + 1);
        let (alpha_s0, _, lambda_s0) = self.schedule.vp_coordinates(i);
        if order == 1 {
            let h = lambda_t - lambda_s0;
            let (ratio, coeff) = (alpha_t / alpha_s0, sigma_t * (h.exp() - 1.0));
            return map2(op, sample, m0, |x, e| ratio * x - coeff * e);
        }
        let (rho_t, _) = self.rho(i + 1);
        let (rho_s0, _) = self.rho(i);
        let (rho_s1, _) = self.rho(i - 1);
        let m1 = &m[m.len() - 2];
        let mut x = if order == 2 {
            let coef1 = integral2(rho_t, rho_s0, rho_s1) - integral2(rho_s0, rho_s0, rho_s1);
            let coef2 = integral2(rho_t, rho_s1, rho_s0) - integral2(rho_s0, rho_s1, rho_s0);
            let x = map2(op, sample, m0, |x, e| x / alpha_s0 + coef1 * e)?;
            map2(op, &x, m1, |x, e| x + coef2 * e)?
        } else {
            let (rho_s2, _) = self.rho(i - 2);
            let m2 = &m[m.len() - 3];
            let coef = |b, c, d| integral3(rho_t, b, c, d) - integral3(rho_s0, b, c, d);
            let coef1 = coef(rho_s0, rho_s1, rho_s2);
            let coef2 = coef(rho_s1, rho_s2, rho_s0);
            let coef3 = coef(rho_s2, rho_s0, rho_s1);
            let x = map2(op, sample, m0, |x, e| x / alpha_s0 + coef1 * e)?;
            let x = map2(op, &x, m1, |x, e| x + coef2 * e)?;
            map2(op, &x, m2, |x, e| x + coef3 * e)?
        };
        x.mapv_inplace(|v| alpha_t * v);
        Ok(x)
    }
}

/// The antiderivative (in ρ, at `t`) of the Lagrange basis polynomial in ln ρ that is 1 at `b`
/// and 0 at `c`, times the exponential-integrator weight: diffusers' second-order `ind_fn`, in
/// f32 in its order of operations.
fn integral2(t: f32, b: f32, c: f32) -> f32 {
    t * (-c.ln() + t.ln() - 1.0) / (b.ln() - c.ln())
}

/// As [`integral2`] for the quadratic basis polynomial that is 1 at `b`, 0 at `c` and `d`.
fn integral3(t: f32, b: f32, c: f32, d: f32) -> f32 {
    let (lt, lc, ld) = (t.ln(), c.ln(), d.ln());
    let numerator = t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
    let denominator = (b.ln() - lc) * (b.ln() - ld);
    numerator / denominator
}

impl Scheduler for DeisScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let (karras, final_sigma) = if self.karras {
            (Some(SigmaBounds::default()), FinalSigma::RepeatLast)
        } else {
            (None, FinalSigma::TrainingMin)
        };
        self.schedule
            .set_multistep(steps, karras, true, final_sigma)?;
        self.history.clear();
        self.lower_order_nums = 0;
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
        let n = self.schedule.timesteps().len();
        let short = self.lower_order_final && n < LOWER_ORDER_FINAL_BELOW;
        let (last, second_last) = (index + 1 == n && short, index + 2 == n && short);

        let prediction = self.noise_prediction(index, sample, model_output)?;
        if self.history.len() == self.solver_order {
            self.history.remove(0);
        }
        self.history.push(prediction);

        let order = if self.solver_order == 1 || self.lower_order_nums < 1 || last {
            1
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || second_last {
            2
        } else {
            3
        };
        let prev = self.update(index, order, sample)?;
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        Ok(prev)
    }
}
