//! A1111's `DPM fast` and `DPM adaptive`: k-diffusion's `sample_dpm_fast` and
//! `sample_dpm_adaptive` (DPM-Solver, Lu et al. 2022, stepping in t = −ln σ) run as A1111 1.10
//! runs them (`sd_samplers_kdiffusion.py`):
//!
//! - Range: txt2img from the model's σ_max down to its σ_min; img2img (A1111's
//!   `sample_img2img`) over the tail `sigma_sched` of the schedule, from `sigma_sched[0]` down to
//!   `sigma_sched[-2]` (the last σ above 0).
//! - DPM fast: `n` model evaluations (txt2img: `n = steps`; img2img: `len(sigma_sched) − 1`) in
//!   ⌊n/3⌋ + 1 equal steps in t, all of order 3 but the last (order n mod 3) or, when 3 divides
//!   n, the last two (orders 2 and 1). An order-k step evaluates the model k times.
//! - DPM adaptive (`dpm_solver_adaptive` at k-diffusion's defaults, which A1111 keeps: order 3,
//!   rtol 0.05, atol 0.0078, h_init 0.05, an I controller with accept safety 0.81): each
//!   attempted step evaluates the model three times (at s, s + h/3, s + 2h/3), compares the
//!   order-2 and order-3 results, and the error norm — over the whole batch, every image of it —
//!   decides whether the step is kept and how long the next one is. A rejected attempt is
//!   retried from the same sample (its first evaluation repeated, as k-diffusion does). The
//!   number of evaluations is known only at the end: [`Scheduler::timesteps`] lists those
//!   planned so far and grows, the pipeline settles each attempt over the batch through
//!   [`Scheduler::error_share`] and [`Scheduler::settle_step`]. The steps setting only picks σ₀.
//! - η = 1 (A1111's "Eta" for ancestral samplers, default 1), s_noise = 1: each step aims at the
//!   ancestral σ_down, `t' = min(t_end, −ln σ_down)`, and (adaptive: when kept) adds
//!   `√(σ(t)² − σ(t')²)·s_noise·randn` drawn from the image's generator — after the last step
//!   too (the run ends at σ_min, not at 0). DPM fast draws that noise even at η = 0.
//! - Start `x = noise · σ₀` with σ₀ the first σ of the schedule type (it matters only there: the
//!   solver's own times come from σ_min/σ_max); img2img starts from `x₀ + noise·σ₀` of the
//!   tail.
//!
//! Arithmetic is f32 in k-diffusion's operation order (`dpm_solver_steps.rs`); the error control
//! is Python floats (f64) around an f32 error norm, as in k-diffusion.

use sd_core::{
    Error, ErrorShare, HostTensor, NormalSource, PartWay, Result, ScheduleState, Scheduler,
};

use super::dpm_solver_steps::{R1, R2, SolverStep, sigma_at};
use super::model_sigmas::ModelSigmas;
use super::{
    DEFAULTS, ScheduleType, a1111_start_step, ancestral_step, compvis_denoised, compvis_model_input,
};
use crate::config::{PredictionType, SchedulerConfig};
use crate::elementwise::{check_index, check_step, check_steps, map2};
use crate::k_diffusion;
use crate::noise_schedule::torch_linspace_f32;

/// Which of k-diffusion's DPM-Solver drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DpmSolverKind {
    /// `sample_dpm_fast`: "DPM fast".
    Fast,
    /// `sample_dpm_adaptive`: "DPM adaptive".
    Adaptive,
}

impl DpmSolverKind {
    fn a1111_name(self) -> &'static str {
        match self {
            DpmSolverKind::Fast => "DPM fast",
            DpmSolverKind::Adaptive => "DPM adaptive",
        }
    }
}

/// `dpm_solver_adaptive`'s defaults, which A1111 does not change.
const RTOL: f32 = 0.05;
const ATOL: f32 = 0.0078;
const H_INIT: f64 = 0.05;
const ACCEPT_SAFETY: f64 = 0.81;
/// The PID controller's guard against a zero error.
const PID_EPS: f64 = 1e-8;
/// How close to t_end the adaptive loop stops (a Python float meeting an f32 tensor).
const END_MARGIN: f32 = 1e-5;

/// One DPM-Solver step of the plan (an attempted step, for DPM adaptive).
#[derive(Debug, Clone, Copy)]
struct Stage {
    order: usize,
    /// From t to where the solver steps: the ancestral σ_down's t, capped at t_end.
    solve: SolverStep,
    /// The step's nominal end t (where the noise brings the sample; adaptive: the next s).
    end: f32,
    /// The noise added after the step: √(σ(end)² − σ(t_solve)²).
    sigma_up: f32,
}

impl Stage {
    /// The step from `t` towards `end`, with η's ancestral split.
    fn new(order: usize, t: f32, end: f32, t_end: f32, eta: f32) -> Self {
        let (t_solve, sigma_up) = if eta > 0.0 {
            let (down, _) = ancestral_step(sigma_at(t), sigma_at(end), eta);
            let t_solve = t_end.min(-down.ln());
            let (to, solved) = (sigma_at(end), sigma_at(t_solve));
            (t_solve, (to * to - solved * solved).sqrt())
        } else {
            (end, 0.0)
        };
        Stage {
            order,
            solve: SolverStep { t, t_end: t_solve },
            end,
            sigma_up,
        }
    }

    /// The times of the step's evaluations: t, then t + r₁h (and t + r₂h for order 3).
    fn evaluation_times(&self) -> Vec<f32> {
        let solve = &self.solve;
        match self.order {
            1 => vec![solve.t],
            2 => vec![solve.t, solve.time_at(0.5)],
            _ => vec![solve.t, solve.time_at(R1), solve.time_at(R2)],
        }
    }

    /// The sample the stage's next evaluation sees, or (after its last) the stage's result
    /// before the noise; `eps` holds ε at the evaluations so far.
    fn advance(&self, x: &HostTensor, eps: &[HostTensor]) -> Result<HostTensor> {
        let (solve, e) = (&self.solve, &eps[0]);
        match (self.order, eps.len()) {
            (1, _) => solve.order_1(x, e),
            (2, 1) => solve.first_order(x, e, 0.5),
            (2, _) => solve.order_2(x, e, &eps[1], 0.5),
            (_, 1) => solve.first_order(x, e, R1),
            (_, 2) => solve.order_3_midpoint(x, e, &eps[1]),
            _ => solve.order_3(x, e, &eps[2]),
        }
    }
}

/// One model evaluation: its stage, its place in the stage, and its σ.
#[derive(Debug, Clone, Copy)]
struct Evaluation {
    stage: usize,
    sub: usize,
    sigma: f32,
}

#[derive(Debug, Clone, Default)]
struct Plan {
    steps: usize,
    /// A1111's `get_sigmas(steps)` for the schedule type.
    schedule_sigmas: Vec<f32>,
    /// The σ the run starts at (the sample is noise·σ₀, or x₀ + noise·σ₀).
    start_sigma: f32,
    /// The solver's end time, −ln σ_min.
    t_end: f32,
    stages: Vec<Stage>,
    evaluations: Vec<Evaluation>,
    timesteps: Vec<f64>,
}

impl Plan {
    fn push(&mut self, stage: Stage, model: &ModelSigmas) {
        for (sub, time) in stage.evaluation_times().into_iter().enumerate() {
            let sigma = sigma_at(time);
            self.evaluations.push(Evaluation {
                stage: self.stages.len(),
                sub,
                sigma,
            });
            self.timesteps.push(f64::from(model.sigma_to_t(sigma)));
        }
        self.stages.push(stage);
    }

    fn clear(&mut self) {
        self.stages.clear();
        self.evaluations.clear();
        self.timesteps.clear();
    }
}

/// What a step carries between its evaluations.
#[derive(Debug, Clone, Default)]
struct History {
    /// The sample at the start of the stage.
    start: Option<HostTensor>,
    /// ε at the stage's evaluations so far.
    eps: Vec<HostTensor>,
}

/// DPM adaptive's error control (k-diffusion's `PIDStepSizeController` with its I gain alone).
#[derive(Debug, Clone, Default)]
struct Control {
    /// The time reached.
    s: f32,
    /// The next step length in t.
    h: f64,
    /// The last inverse errors, newest first (empty before the first attempt).
    inverse_errors: Vec<f64>,
    /// The order-2 result of the last kept step (the run's start sample before one).
    x_prev: Option<HostTensor>,
    /// The attempt waiting for the batch's error: its order-2 and order-3 results and this
    /// lane's share of the error norm.
    pending: Option<(HostTensor, HostTensor, ErrorShare)>,
}

impl Control {
    /// `propose_step`: whether an attempt with this error is kept; updates h.
    fn propose(&mut self, error: f64, eta: f32) -> bool {
        // k-diffusion's controller order is 1.5 for a stochastic run, else the solver's 3.
        let order = if eta > 0.0 { 1.5 } else { 3.0 };
        let inverse = 1.0 / (error + PID_EPS);
        if self.inverse_errors.is_empty() {
            self.inverse_errors = vec![inverse; 3];
        }
        self.inverse_errors[0] = inverse;
        // b1 = (p + i + d)/order with p = d = 0, i = 1; b2 = b3 = 0 (x⁰ = 1).
        let factor = self.inverse_errors[0].powf(1.0 / order);
        let factor = 1.0 + (factor - 1.0).atan();
        let accept = factor >= ACCEPT_SAFETY;
        if accept {
            self.inverse_errors[2] = self.inverse_errors[1];
            self.inverse_errors[1] = self.inverse_errors[0];
        }
        self.h *= factor;
        accept
    }
}

/// A1111's DPM fast or DPM adaptive (see the module docs).
#[derive(Debug, Clone)]
pub struct A1111DpmSolverSampler {
    kind: DpmSolverKind,
    schedule: ScheduleType,
    eta: f32,
    s_noise: f32,
    prediction: PredictionType,
    num_train_timesteps: usize,
    model: ModelSigmas,
    plan: Plan,
    history: History,
    control: Control,
}

impl A1111DpmSolverSampler {
    /// A sampler over the noise schedule of `config`; `schedule` (resolved, not Automatic)
    /// sets σ₀ and the img2img tail; `eta` is A1111's (default 1).
    pub fn new(
        config: &SchedulerConfig,
        kind: DpmSolverKind,
        schedule: ScheduleType,
        eta: f32,
    ) -> Result<Self> {
        let noise = config.noise_schedule(&DEFAULTS)?;
        config.require_noise_prediction(noise.prediction_type)?;
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::invalid_argument(
                "eta",
                format!("must be a finite number ≥ 0, got {eta}"),
            ));
        }
        Ok(A1111DpmSolverSampler {
            kind,
            schedule,
            eta,
            s_noise: 1.0,
            prediction: noise.prediction_type,
            num_train_timesteps: noise.num_train_timesteps,
            model: ModelSigmas::new(&noise.beta_schedule, noise.num_train_timesteps),
            plan: Plan::default(),
            history: History::default(),
            control: Control::default(),
        })
    }

    pub fn kind(&self) -> DpmSolverKind {
        self.kind
    }

    /// The noise level of each model evaluation planned so far.
    pub fn evaluation_sigmas(&self) -> Vec<f32> {
        self.plan.evaluations.iter().map(|e| e.sigma).collect()
    }

    /// Plan the run from σ_max down to σ_min: DPM fast's `nfe` evaluations, or DPM adaptive's
    /// first attempt.
    fn plan_solver(&mut self, sigma_max: f32, sigma_min: f32, nfe: usize) -> Result<()> {
        if !(sigma_min > 0.0 && sigma_max > 0.0) || nfe == 0 {
            return Err(Error::invalid_argument(
                "steps",
                format!(
                    "A1111's {} needs evaluations between positive σ (got {nfe} between \
                     {sigma_min} and {sigma_max})",
                    self.kind.a1111_name()
                ),
            ));
        }
        let (t_start, t_end) = (-sigma_max.ln(), -sigma_min.ln());
        self.plan.clear();
        self.plan.t_end = t_end;
        self.history = History::default();
        match self.kind {
            DpmSolverKind::Fast => {
                let m = nfe / 3 + 1;
                let ts = torch_linspace_f32(t_start, t_end, m + 1);
                let mut orders = vec![3; m - 1];
                if nfe.is_multiple_of(3) {
                    orders.truncate(m - 2);
                    orders.extend([2, 1]);
                } else {
                    orders.push(nfe % 3);
                }
                for (i, order) in orders.into_iter().enumerate() {
                    let stage = Stage::new(order, ts[i], ts[i + 1], t_end, self.eta);
                    self.plan.push(stage, &self.model);
                }
            }
            DpmSolverKind::Adaptive => {
                self.control = Control {
                    s: t_start,
                    h: H_INIT,
                    ..Control::default()
                };
                self.plan_attempt();
            }
        }
        Ok(())
    }

    /// DPM adaptive: the next attempt from the time reached, unless the run is at its end.
    fn plan_attempt(&mut self) {
        let (s, t_end) = (self.control.s, self.plan.t_end);
        if s >= t_end - END_MARGIN {
            return;
        }
        let end = t_end.min(s + self.control.h as f32);
        let stage = Stage::new(3, s, end, t_end, self.eta);
        self.plan.push(stage, &self.model);
    }

    /// Plan the txt2img run (`tail` = `None`: the model's whole σ range, `steps` evaluations
    /// for DPM fast) or A1111's img2img run over the schedule from step `tail` on.
    fn plan_from(&mut self, tail: Option<usize>) -> Result<()> {
        let sigmas = &self.plan.schedule_sigmas;
        let (start_sigma, sigma_max, sigma_min, nfe) = match tail {
            None => (
                sigmas[0],
                self.model.sigma_max(),
                self.model.sigma_min(),
                self.plan.steps,
            ),
            Some(first_step) => {
                // A1111 passes the last σ above 0 as σ_min: DPM-Solver's t is −ln σ.
                let tail = &sigmas[first_step.min(sigmas.len() - 2)..];
                (tail[0], tail[0], tail[tail.len() - 2], tail.len() - 1)
            }
        };
        self.plan.start_sigma = start_sigma;
        self.plan_solver(sigma_max, sigma_min, nfe)
    }

    /// DPM adaptive, after an attempt's third evaluation: its order-2 and order-3 results and
    /// this lane's share of the error norm, `Σ ((x_low − x_high)/δ)²` with
    /// δ = max(atol, rtol·max(|x_low|, |x_prev|)).
    fn judge_attempt(&mut self, x_low: HostTensor, x_high: HostTensor) -> Result<HostTensor> {
        let x_prev = match &self.control.x_prev {
            Some(x_prev) => x_prev,
            None => self.history.start.as_ref().ok_or_else(stage_lost)?,
        };
        let scaled = map2("DPM adaptive error", &x_low, x_prev, |low, prev| {
            ATOL.max(RTOL * low.abs().max(prev.abs()))
        })?;
        let mut sum_of_squares = 0.0f64;
        for ((low, high), delta) in x_low.iter().zip(&x_high).zip(&scaled) {
            let e = (low - high) / delta;
            sum_of_squares += f64::from(e) * f64::from(e);
        }
        let share = ErrorShare {
            sum_of_squares,
            elements: x_low.len(),
        };
        self.control.pending = Some((x_low, x_high.clone(), share));
        // Provisional: settle_step replaces it once the batch's error is known.
        Ok(x_high)
    }
}

fn stage_lost() -> Error {
    Error::invalid_argument(
        "index",
        "steps taken out of order: a DPM-Solver step lost its first evaluations",
    )
}

impl Scheduler for A1111DpmSolverSampler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(steps, self.num_train_timesteps)?;
        self.plan.steps = steps;
        self.plan.schedule_sigmas = self.schedule.sigmas(&self.model, steps);
        self.plan_from(None)
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
        check_step(index, self.plan.evaluations.len(), model_output, sample)?;
        let evaluation = self.plan.evaluations[index];
        let stage = self.plan.stages[evaluation.stage];
        if evaluation.sub == 0 {
            self.history = History {
                start: Some(sample.clone()),
                eps: Vec::with_capacity(stage.order),
            };
        } else if self.history.eps.len() != evaluation.sub {
            return Err(stage_lost());
        }
        // k-diffusion's DPMSolver.eps: (x − denoised)/σ from the CompVis denoiser's output.
        let sigma = evaluation.sigma;
        let denoised = compvis_denoised(self.prediction, sigma, sample, model_output)?;
        let eps = map2("DPM-Solver ε", sample, &denoised, |x, d| (x - d) / sigma)?;
        self.history.eps.push(eps);
        let x = self.history.start.as_ref().ok_or_else(stage_lost)?;
        let next = stage.advance(x, &self.history.eps)?;
        if self.history.eps.len() < stage.order {
            return Ok(next);
        }
        match self.kind {
            DpmSolverKind::Fast => {
                // The ancestral noise, drawn (as k-diffusion does) even when η = 0 zeroes it.
                let noise = generator.randn(sample.shape());
                let amount = stage.sigma_up * self.s_noise;
                map2("DPM fast noise", &next, &noise, |x, n| x + amount * n)
            }
            DpmSolverKind::Adaptive => {
                let eps = &self.history.eps;
                let x_low = stage.solve.order_2(x, &eps[0], &eps[1], R1)?;
                self.judge_attempt(x_low, next)
            }
        }
    }

    fn error_share(&self) -> Option<ErrorShare> {
        self.control.pending.as_ref().map(|(_, _, share)| *share)
    }

    /// DPM adaptive: keep or retry the attempt by the batch's error norm
    /// `‖(x_low − x_high)/δ‖ / √(elements)` (f32), then plan the next attempt.
    fn settle_step(
        &mut self,
        batch: ErrorShare,
        sample: &HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        let Some((x_low, x_high, _)) = self.control.pending.take() else {
            return Ok(sample.clone());
        };
        let stage = *self.plan.stages.last().ok_or_else(stage_lost)?;
        let norm = batch.sum_of_squares.sqrt() as f32;
        let error = norm / (batch.elements as f64).sqrt() as f32;
        let next = if self.control.propose(f64::from(error), self.eta) {
            self.control.x_prev = Some(x_low);
            self.control.s = stage.end;
            let noise = generator.randn(sample.shape());
            let amount = stage.sigma_up * self.s_noise;
            map2("DPM adaptive noise", &x_high, &noise, |x, n| x + amount * n)?
        } else {
            self.history.start.clone().ok_or_else(stage_lost)?
        };
        self.plan_attempt();
        Ok(next)
    }

    /// A1111's img2img: the run over the schedule's tail from step
    /// `steps − ⌊min(strength, 0.999)·steps⌋ − 1` (the hires pass: the last `kept`). The plan
    /// holds only what runs.
    fn begin_part_way(&mut self, start: PartWay) -> Result<usize> {
        let steps = self.plan.steps;
        let first_step = match start {
            PartWay::Strength(1.0) => return Ok(0),
            PartWay::Strength(strength) => a1111_start_step(strength, steps)?,
            PartWay::Keeping { kept, strength } => {
                a1111_start_step(strength, steps)?;
                steps.saturating_sub(kept)
            }
        };
        self.plan_from(Some(first_step))?;
        Ok(0)
    }

    /// A part-way run is a plan of its own: only
    /// [`begin_part_way`](Scheduler::begin_part_way) makes it.
    fn start_index(&self, strength: f64) -> Result<usize> {
        if strength == 1.0 {
            return Ok(0);
        }
        Err(Error::invalid_argument(
            "strength",
            format!(
                "A1111's {} starts part-way (strength {strength}) with a plan of its own: \
                 begin_part_way makes it",
                self.kind.a1111_name()
            ),
        ))
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
        self.start_sigma
    }

    /// `x · c_in`, c_in = 1/√(σ² + 1) at the evaluation's σ.
    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        check_index(index, self.evaluations.len())?;
        Ok(compvis_model_input(sample, self.evaluations[index].sigma))
    }

    /// `x₀ + σ·ε`: at the run's start σ₀ (A1111's `x + noise · sigma_sched[0]`), else at the
    /// evaluation's σ.
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        check_index(index, self.evaluations.len())?;
        let sigma = match index {
            0 => self.start_sigma,
            _ => self.evaluations[index].sigma,
        };
        k_diffusion::add_noise(sigma, original, noise)
    }
}
