//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
//! of Diffusion Models"), diffusers' `UniPCMultistepScheduler` in its default form: data
//! prediction (`predict_x0`), B(h) = e^h − 1 (`bh2`), lower orders for the final steps.
//!
//! Each step first corrects the sample it was given with the new model output (UniC), then
//! predicts the next one (UniP); both fit past x̂₀ in λ like DPM-Solver.
//!
//! The other variants (`bh1`, `predict_x0 = false`, `lower_order_final = false`) are refused:
//! with the final σ = 0 diffusers 0.42 computes 0·∞ in their last step and returns NaN or ∞.

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::map2;
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas::{FinalSigma, SigmaBounds};

const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

#[derive(Debug, Clone)]
pub struct UniPcScheduler {
    schedule: SigmaTimesteps,
    solver_order: usize,
    /// Step indices after which no correction is applied.
    disable_corrector: Vec<usize>,
    karras: Option<SigmaBounds>,
    /// The last `solver_order` converted model outputs, oldest first.
    history: Vec<HostTensor>,
    lower_order_nums: usize,
    /// The sample the previous prediction started from, and that prediction's order.
    last: Option<(HostTensor, usize)>,
}

/// Which of the two UniPC updates to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Update {
    Predictor,
    Corrector,
}

impl UniPcScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0 (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `UniPCMultistepScheduler`'s defaults for missing
    /// keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        let solver_order = config.solver_order.unwrap_or(2);
        if solver_order == 0 {
            return Err(config.error("solver_order", "must be at least 1"));
        }
        // diffusers maps the DPM-Solver names to bh2.
        if let Some(v) = config
            .solver_type
            .as_deref()
            .filter(|v| !["bh2", "midpoint", "heun", "logrho"].contains(v))
        {
            return Err(config.error(
                "solver_type",
                format!("`{v}` is not supported, only bh2 (see the module docs)"),
            ));
        }
        if config.predict_x0 == Some(false) {
            return Err(config.error(
                "predict_x0",
                "false is not supported: diffusers returns NaN on its last step",
            ));
        }
        if config.lower_order_final == Some(false) {
            return Err(config.error(
                "lower_order_final",
                "false is not supported: diffusers returns ∞ on its last step",
            ));
        }
        if let Some(v) = config.final_sigmas_type.as_deref().filter(|v| *v != "zero") {
            return Err(config.error(
                "final_sigmas_type",
                format!("`{v}` is not supported, only `zero`"),
            ));
        }
        Ok(UniPcScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::VariancePreserving),
            solver_order,
            disable_corrector: config.disable_corrector.clone().unwrap_or_default(),
            karras: config
                .use_karras_sigmas
                .unwrap_or(false)
                .then_some(SigmaBounds {
                    min: config.sigma_min,
                    max: config.sigma_max,
                }),
            history: Vec::new(),
            lower_order_nums: 0,
            last: None,
        })
    }

    /// One UniP (predictor) or UniC (corrector) update of `order` from position `s0` to `s0 + 1`,
    /// starting at sample `x`. `outputs` are the converted model outputs up to position `s0`
    /// (newest last, = m0). The corrector redoes the previous step with the newest output
    /// `model_t` (at `s0 + 1`) as an extra point.
    fn update(
        &self,
        kind: Update,
        s0: usize,
        order: usize,
        x: &HostTensor,
        outputs: &[HostTensor],
        model_t: Option<&HostTensor>,
    ) -> Result<HostTensor> {
        let op = "UniPC step";
        let newest = outputs.len() - 1;
        let m0 = &outputs[newest];
        let (alpha_t, sigma_t, lambda_t) = self.schedule.vp_coordinates(s0 + 1);
        let (_, sigma_s0, lambda_s0) = self.schedule.vp_coordinates(s0);
        let h = lambda_t - lambda_s0;

        // Past outputs as scaled differences D1_k = (m_k − m0)/r_k at λ ratios r_k.
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for k in 1..order {
            let (_, _, lambda_sk) = self.schedule.vp_coordinates(s0 - k);
            let rk = (lambda_sk - lambda_s0) / h;
            let mk = &outputs[newest - k];
            d1s.push(map2(op, mk, m0, |a, b| (a - b) / rk)?);
            rks.push(rk);
        }
        rks.push(1.0);

        // Data prediction integrates in −h; B(h) = e^{−h} − 1 (bh2).
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        // R[i][k] = r_k^i; b[i] = (i+1)!·φ_{i+1}(h)·h / B(h).
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0f32;
        let mut r_rows = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r_rows.push(
                rks.iter()
                    .map(|&r| r.powi(i as i32 - 1))
                    .collect::<Vec<f32>>(),
            );
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f32;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }

        let rhos = match kind {
            Update::Predictor if order == 2 => vec![0.5],
            Update::Predictor if order > 2 => solve(
                r_rows[..order - 1]
                    .iter()
                    .map(|row| row[..order - 1].to_vec())
                    .collect(),
                b[..order - 1].to_vec(),
            ),
            Update::Predictor => Vec::new(),
            Update::Corrector if order == 1 => vec![0.5],
            Update::Corrector => solve(r_rows, b),
        };

        // x_t = (σ_t/σ_s0)·x − α_t·hφ₁·m0 − α_t·B(h)·Σ ρ_k D1_k
        let (x_coeff, m0_coeff, res_coeff) = (sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h);
        let base_update = map2(op, x, m0, |x, m| x_coeff * x - m0_coeff * m)?;
        let mut residual: Option<HostTensor> = None;
        for (d1, &rho) in d1s.iter().zip(&rhos) {
            residual = Some(match residual {
                None => d1.mapv(|d| rho * d),
                Some(acc) => map2(op, &acc, d1, |a, d| a + rho * d)?,
            });
        }
        if let (Update::Corrector, Some(model_t)) = (kind, model_t) {
            let rho_t = rhos[rhos.len() - 1];
            let d1_t = map2(op, model_t, m0, |a, b| a - b)?;
            residual = Some(match residual {
                None => d1_t.mapv(|d| rho_t * d),
                Some(acc) => map2(op, &acc, &d1_t, |a, d| a + rho_t * d)?,
            });
        }
        match residual {
            Some(res) => map2(op, &base_update, &res, |x, r| x - res_coeff * r),
            None => Ok(base_update),
        }
    }
}

/// Solve `a·x = b` by Gaussian elimination with partial pivoting in f32 (LAPACK's `sgesv`
/// recipe, which `torch.linalg.solve` runs); `a` is tiny (order ≤ 3) and never singular here.
fn solve(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Vec<f32> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        // LAPACK scales the column by the pivot's reciprocal rather than dividing.
        let inv = 1.0 / a[col][col];
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        let (b_upper, b_lower) = b.split_at_mut(col + 1);
        for (row, b_row) in lower.iter_mut().zip(b_lower.iter_mut()) {
            let factor = row[col] * inv;
            for (x, &p) in row[col + 1..].iter_mut().zip(&pivot_row[col + 1..]) {
                *x -= factor * p;
            }
            *b_row -= factor * b_upper[col];
        }
    }
    let mut x = vec![0.0f32; n];
    for row in (0..n).rev() {
        let tail: f32 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x
}

impl Scheduler for UniPcScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        self.schedule
            .set_multistep(steps, self.karras, true, FinalSigma::Zero)?;
        self.history.clear();
        self.lower_order_nums = 0;
        self.last = None;
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
        let converted = self
            .schedule
            .data_prediction("UniPC step", index, sample, model_output)?;
        let corrected = match self.last.take() {
            Some((last_sample, last_order))
                if index > 0 && !self.disable_corrector.contains(&(index - 1)) =>
            {
                self.update(
                    Update::Corrector,
                    index - 1,
                    last_order,
                    &last_sample,
                    &self.history,
                    Some(&converted),
                )?
            }
            _ => sample.clone(),
        };

        if self.history.len() == self.solver_order {
            self.history.remove(0);
        }
        self.history.push(converted);

        // Lower orders near the end (lower_order_final) and while the history fills up.
        let order = self
            .solver_order
            .min(self.schedule.timesteps().len() - index)
            .min(self.lower_order_nums + 1);
        let prev = self.update(
            Update::Predictor,
            index,
            order,
            &corrected,
            &self.history,
            None,
        )?;
        self.last = Some((corrected, order));
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        Ok(prev)
    }
}
