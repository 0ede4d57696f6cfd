//! AUTOMATIC1111's `UniPC` (`modules/sd_samplers_timesteps_impl.py` `unipc` over
//! `modules/models/diffusion/uni_pc/uni_pc.py`), with A1111's default options: variant `bh1`,
//! skip type `time_uniform`, order 3, lower order final. It is not diffusers'
//! `UniPCMultistepScheduler`:
//!
//! - Time: continuous t from 1 down to 1/1000 in `steps` equal parts (f32 `linspace`); the
//!   UNet sees `(t − 1/1000)·1000` (999, 899.1, … for 10 steps), the unscaled sample, and
//!   predicts ε (guidance mixes the two ε).
//! - Noise schedule: ln α(t) = ½ ln ᾱ of the LDM table, interpolated linearly between the
//!   training timesteps placed at t = 1/1000, 2/1000, …, 1 (`NoiseScheduleVP('discrete')`);
//!   σ(t) = √(1 − α²), λ = ln α − ln σ.
//! - Steps: data prediction x̂₀ = (x − σ·ε)/α at each evaluation; each step predicts with the
//!   UniPC B(h) = h update from the last `order` x̂₀ and, but on the last step, corrects with the
//!   x̂₀ evaluated at the prediction (that evaluation then serves the next step). The first steps
//!   warm up with orders 1 and 2; the last ones lower the order to what is left.
//! - The sample starts as the noise itself; the model is evaluated `steps` times.
//! - img2img (A1111's `sample_img2img` with `is_img2img`): with t_enc as A1111's timestep
//!   samplers compute it (`a1111_timesteps.rs`), the sample is noised to the DDIM timestep
//!   `timesteps[t_enc]` and UniPC runs `t_enc` fresh steps from
//!   `t = timesteps[t_enc − 1]/1000 + 1/1000` (f32) down to 1/1000 — a start A1111's own
//!   comment calls "likely off by a bit",
//!   reproduced as it is. It needs t_enc ≥ 3, as A1111 asserts.
//!
//! Arithmetic is f32 in the reference's operation order; the small linear systems for the
//! coefficients are solved by Gaussian elimination with partial pivoting (LAPACK's `gesv` on the
//! reference side), equal to rounding.

use sd_core::{Error, HostTensor, NormalSource, PartWay, Result, ScheduleState, Scheduler};

use crate::a1111_timesteps::{a1111_alphas_cumprod, a1111_timesteps, part_way_t_enc};
use crate::alpha_family;
use crate::config::SchedulerConfig;
use crate::elementwise::{check_index, check_step, map2};
use crate::noise_schedule::torch_linspace_f32;

/// A1111's `uni_pc_order` default.
const ORDER: usize = 3;
/// Training timesteps (A1111's UniPC wrapper spaces t over 1000 of them).
const TOTAL_N: usize = 1000;

/// A1111's UniPC (see the module docs).
#[derive(Debug, Clone)]
pub struct A1111UniPcSampler {
    schedule: NoiseScheduleVp,
    /// The LDM ᾱ table (A1111 noises an img2img start with it).
    alphas_cumprod: Vec<f32>,
    plan: Plan,
    history: History,
}

/// `NoiseScheduleVP('discrete')`: ln α at the keypoints t = k/1000, k = 1 … 1000.
#[derive(Debug, Clone)]
struct NoiseScheduleVp {
    t_array: Vec<f32>,
    log_alpha_array: Vec<f32>,
}

impl NoiseScheduleVp {
    fn new(alphas_cumprod: &[f32]) -> Self {
        let mut t_array = torch_linspace_f32(0.0, 1.0, alphas_cumprod.len() + 1);
        t_array.remove(0);
        NoiseScheduleVp {
            t_array,
            log_alpha_array: alphas_cumprod.iter().map(|a| 0.5 * a.ln()).collect(),
        }
    }

    /// ln α(t): the keypoints' piecewise linear function, extended by its outer segments
    /// (`interpolate_fn`).
    fn log_alpha(&self, t: f32) -> f32 {
        let (xp, yp) = (&self.t_array, &self.log_alpha_array);
        let k = xp.len();
        // Where t sorts among the keypoints (before equal ones).
        let position = xp.partition_point(|&x| x < t);
        let start = position.clamp(1, k - 1) - 1;
        let (x0, x1, y0, y1) = (xp[start], xp[start + 1], yp[start], yp[start + 1]);
        y0 + (t - x0) * (y1 - y0) / (x1 - x0)
    }

    fn alpha(&self, t: f32) -> f32 {
        self.log_alpha(t).exp()
    }

    fn std(&self, t: f32) -> f32 {
        (1.0 - (2.0 * self.log_alpha(t)).exp()).sqrt()
    }

    fn lambda(&self, t: f32) -> f32 {
        let log_alpha = self.log_alpha(t);
        let log_std = 0.5 * (1.0 - (2.0 * log_alpha).exp()).ln();
        log_alpha - log_std
    }
}

#[derive(Debug, Clone, Default)]
struct Plan {
    /// Evaluations of the run (`t_enc` for a part-way run).
    steps: usize,
    /// The steps given to `set_timesteps`.
    requested_steps: usize,
    /// A part-way run: the ᾱ A1111 noises the start sample to.
    start_alpha_cumprod: Option<f32>,
    /// The continuous times, `steps + 1` of them from 1 down to 1/1000.
    times: Vec<f32>,
    /// What the UNet sees at each of the `steps` evaluations.
    model_timesteps: Vec<f64>,
    /// (α, σ) at each evaluation's time.
    noise_levels: Vec<(f32, f32)>,
}

/// The solver's memory: the last `ORDER` data predictions and their times, oldest first, and
/// the sample at the start of the step in progress.
#[derive(Debug, Clone, Default)]
struct History {
    models: Vec<HostTensor>,
    times: Vec<f32>,
    step_start: Option<HostTensor>,
}

impl A1111UniPcSampler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let alphas_cumprod = a1111_alphas_cumprod(config, "UniPC")?;
        Ok(A1111UniPcSampler {
            schedule: NoiseScheduleVp::new(&alphas_cumprod),
            alphas_cumprod,
            plan: Plan::default(),
            history: History::default(),
        })
    }

    /// The plan of `steps` evaluations from continuous time `t_start` down to 1/1000.
    fn make_plan(&mut self, steps: usize, t_start: f32) -> Result<()> {
        if !(ORDER..=TOTAL_N).contains(&steps) {
            return Err(Error::invalid_argument(
                "steps",
                format!(
                    "A1111's UniPC (order {ORDER}) needs {ORDER} to {TOTAL_N} steps, got {steps}"
                ),
            ));
        }
        let t_0 = (1.0 / TOTAL_N as f64) as f32;
        let times = torch_linspace_f32(t_start, t_0, steps + 1);
        let model_timesteps = times[..steps]
            .iter()
            .map(|&t| f64::from((t - t_0) * TOTAL_N as f32))
            .collect();
        let noise_levels = times[..steps]
            .iter()
            .map(|&t| (self.schedule.alpha(t), self.schedule.std(t)))
            .collect();
        self.plan = Plan {
            steps,
            requested_steps: self.plan.requested_steps,
            start_alpha_cumprod: None,
            times,
            model_timesteps,
            noise_levels,
        };
        self.history = History::default();
        Ok(())
    }

    /// The order of step `step` (1-based): warm-up orders 1, 2, …, then `ORDER`, lowered to
    /// what is left near the end.
    fn order_of(&self, step: usize) -> usize {
        if step < ORDER {
            step
        } else {
            ORDER.min(self.plan.steps + 1 - step)
        }
    }

    /// x̂₀ = (x − σ_t·ε)/α_t.
    fn data_prediction(&self, x: &HostTensor, eps: &HostTensor, t: f32) -> Result<HostTensor> {
        let (alpha, sigma) = (self.schedule.alpha(t), self.schedule.std(t));
        map2("UniPC x0", x, eps, |x, e| (x - sigma * e) / alpha)
    }

    /// One `multistep_uni_pc_bh_update` from `x` (at the last remembered time) to `t` of the
    /// given order: the prediction, or with `model_t` (x̂₀ evaluated at the prediction) the
    /// correction.
    fn update(
        &self,
        x: &HostTensor,
        t: f32,
        order: usize,
        model_t: Option<&HostTensor>,
    ) -> Result<HostTensor> {
        let ns = &self.schedule;
        let (models, times) = (&self.history.models, &self.history.times);
        let last = models.len() - 1;
        let (t_prev_0, model_prev_0) = (times[last], &models[last]);
        let lambda_prev_0 = ns.lambda(t_prev_0);
        let h = ns.lambda(t) - lambda_prev_0;
        let (sigma_prev_0, sigma_t) = (ns.std(t_prev_0), ns.std(t));
        let alpha_t = ns.log_alpha(t).exp();

        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let rk = (ns.lambda(times[last - i]) - lambda_prev_0) / h;
            rks.push(rk);
            d1s.push(map2(
                "UniPC D1",
                &models[last - i],
                model_prev_0,
                |m, m0| (m - m0) / rk,
            )?);
        }
        rks.push(1.0);

        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1u32;
        // Variant bh1: B(h) = h.
        let b_h = hh;
        let mut r = vec![vec![0.0f32; order]; order];
        let mut b = vec![0.0f32; order];
        for i in 1..=order {
            for (k, &rk) in rks.iter().enumerate() {
                r[i - 1][k] = torch_pow(rk, i - 1);
            }
            b[i - 1] = h_phi_k * factorial as f32 / b_h;
            factorial *= (i + 1) as u32;
            h_phi_k = h_phi_k / hh - (1.0 / f64::from(factorial)) as f32;
        }

        let ratio = sigma_t / sigma_prev_0;
        let weight = alpha_t * h_phi_1;
        let base = map2("UniPC step", x, model_prev_0, |x, m| ratio * x - weight * m)?;
        let scale = alpha_t * b_h;
        match model_t {
            None if d1s.is_empty() => Ok(base),
            None => {
                let rhos = if order == 2 {
                    vec![0.5]
                } else {
                    solve(&r[..order - 1], &b[..order - 1], order - 1)?
                };
                let residual = weighted_sum(&rhos, &d1s)?;
                map2("UniPC predictor", &base, &residual, |x, p| x - scale * p)
            }
            Some(model_t) => {
                let rhos = if order == 1 {
                    vec![0.5]
                } else {
                    solve(&r, &b, order)?
                };
                let rho_t = rhos[order - 1];
                let d1_t = map2("UniPC D1", model_t, model_prev_0, |m, m0| m - m0)?;
                let correction = if d1s.is_empty() {
                    d1_t.mapv(|d| 0.0 + rho_t * d)
                } else {
                    let residual = weighted_sum(&rhos[..order - 1], &d1s)?;
                    map2("UniPC corrector", &residual, &d1_t, |c, d| c + rho_t * d)?
                };
                map2("UniPC corrector", &base, &correction, |x, c| x - scale * c)
            }
        }
    }

    /// Remember x̂₀ at time `t`, keeping the last `ORDER`.
    fn remember(&mut self, model: HostTensor, t: f32) {
        if self.history.models.len() == ORDER {
            self.history.models.remove(0);
            self.history.times.remove(0);
        }
        self.history.models.push(model);
        self.history.times.push(t);
    }
}

impl Scheduler for A1111UniPcSampler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        self.plan.requested_steps = steps;
        self.make_plan(steps, 1.0)
    }

    fn schedule(&self) -> &dyn ScheduleState {
        &self.plan
    }

    /// Evaluation `index` is at time `times[index]`: it corrects step `index` (but the first),
    /// then predicts step `index + 1`, which the last step keeps uncorrected.
    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        _generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        check_step(index, self.plan.steps, model_output, sample)?;
        let t = self.plan.times[index];
        let model = self.data_prediction(sample, model_output, t)?;
        let x = if index == 0 {
            self.history = History::default();
            sample.clone()
        } else {
            let start = self.history.step_start.take().ok_or_else(|| {
                Error::invalid_argument("index", "steps taken out of order: UniPC lost its step")
            })?;
            self.update(&start, t, self.order_of(index), Some(&model))?
        };
        self.remember(model, t);
        let next = index + 1;
        let predicted = self.update(&x, self.plan.times[next], self.order_of(next), None)?;
        self.history.step_start = Some(x);
        Ok(predicted)
    }

    /// Strength 1 (txt2img) runs every step; below 1 A1111's UniPC makes a plan of its own,
    /// which only [`begin_part_way`](Scheduler::begin_part_way) makes.
    fn start_index(&self, strength: f64) -> Result<usize> {
        if strength == 1.0 {
            return Ok(0);
        }
        Err(Error::invalid_argument(
            "strength",
            format!(
                "A1111's UniPC starts part-way (strength {strength}) with a plan of its own: \
                 begin_part_way makes it"
            ),
        ))
    }

    /// A1111's UniPC img2img (see the module docs); the plan holds only what runs.
    fn begin_part_way(&mut self, start: PartWay) -> Result<usize> {
        let Some(t_enc) = part_way_t_enc(start, self.plan.requested_steps)? else {
            return Ok(0);
        };
        let timesteps = a1111_timesteps(self.plan.requested_steps);
        if t_enc < ORDER || t_enc >= timesteps.len() {
            return Err(Error::invalid_argument(
                "strength",
                format!(
                    "A1111's UniPC img2img runs t_enc = {t_enc} steps of {}; it needs {ORDER} \
                     to {}",
                    self.plan.requested_steps,
                    timesteps.len() - 1
                ),
            ));
        }
        // timesteps[t_enc − 1] / 1000 + 1 / 1000, each rounded to f32 as torch does.
        let top = timesteps[t_enc - 1] as f32 / TOTAL_N as f32;
        let t_start = top + (1.0 / TOTAL_N as f64) as f32;
        self.make_plan(t_enc, t_start)?;
        self.plan.start_alpha_cumprod = Some(self.alphas_cumprod[timesteps[t_enc]]);
        Ok(0)
    }
}

impl ScheduleState for Plan {
    fn timesteps(&self) -> &[f64] {
        &self.model_timesteps
    }

    fn steps(&self) -> usize {
        self.steps
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        check_index(index, self.steps)?;
        Ok(sample.clone())
    }

    /// `α·x₀ + σ·ε` at the evaluation's time (the level of the sample that evaluation sees);
    /// a part-way run's start: `√ᾱ·x₀ + √(1 − ᾱ)·ε` at the DDIM timestep A1111 noises to.
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        check_index(index, self.steps)?;
        if let (0, Some(alpha_cumprod)) = (index, self.start_alpha_cumprod) {
            return alpha_family::add_noise(alpha_cumprod, original, noise);
        }
        let (alpha, sigma) = self.noise_levels[index];
        map2("add noise", original, noise, |x, n| alpha * x + sigma * n)
    }
}

/// torch's `pow(x, n)` for the small n here: 1, x, x·x.
fn torch_pow(x: f32, n: usize) -> f32 {
    match n {
        0 => 1.0,
        1 => x,
        2 => x * x,
        _ => x.powi(n as i32),
    }
}

/// Σₖ wₖ·Dₖ, left to right.
fn weighted_sum(weights: &[f32], tensors: &[HostTensor]) -> Result<HostTensor> {
    let mut sum = tensors[0].mapv(|d| weights[0] * d);
    for (w, d) in weights.iter().zip(tensors).skip(1) {
        sum = map2("UniPC residual", &sum, d, |s, d| s + w * d)?;
    }
    Ok(sum)
}

/// The n × n system `a·x = b` (the first n rows and columns of `a`), by Gaussian elimination
/// with partial pivoting in f32.
fn solve(a: &[Vec<f32>], b: &[f32], n: usize) -> Result<Vec<f32>> {
    let mut m: Vec<Vec<f32>> = a.iter().take(n).map(|row| row[..n].to_vec()).collect();
    let mut rhs = b[..n].to_vec();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))
            .unwrap_or(col);
        if m[pivot][col] == 0.0 || !m[pivot][col].is_finite() {
            return Err(Error::invalid_argument(
                "steps",
                "UniPC's coefficient system is singular (two solver times coincide)",
            ));
        }
        m.swap(col, pivot);
        rhs.swap(col, pivot);
        let pivot_row = m[col].clone();
        for row in col + 1..n {
            let factor = m[row][col] / pivot_row[col];
            for (target, &p) in m[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *target -= factor * p;
            }
            rhs[row] -= factor * rhs[col];
        }
    }
    let mut x = vec![0.0f32; n];
    for row in (0..n).rev() {
        let mut value = rhs[row];
        for (a, b) in m[row][row + 1..].iter().zip(&x[row + 1..]) {
            value -= a * b;
        }
        x[row] = value / m[row][row];
    }
    Ok(x)
}
