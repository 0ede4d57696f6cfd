//! AUTOMATIC1111's own timestep samplers, `DDIM`, `DDIM CFG++` and `PLMS`
//! (`modules/sd_samplers_timesteps.py` and `sd_samplers_timesteps_impl.py`), which A1111 runs
//! instead of diffusers' classes and which differ from them:
//!
//! - Timesteps: `range(0, 1000, 1000 // steps) + 1` clipped to 999 (1, 101, …, 901 for 10
//!   steps), walked from the top; the loop runs `len − 1` times, so DDIM evaluates the model
//!   `steps − 1` times (never at the lowest timestep) and ends at ᾱ of that lowest timestep.
//! - ᾱ: the LDM model's table (f64 cumulative product stored as f32); the "previous" ᾱ of the
//!   top-most entry falls back to ᾱ₀ (a zero pad before the timestep list).
//! - Model: the UNet sees the unscaled sample at the integer timestep and predicts ε; guidance
//!   mixes the two ε (A1111's CFG denoiser mixes the two outputs, which here are ε).
//! - PLMS: the first step is a pseudo improved Euler step (two model evaluations, the second at
//!   the next timestep), the following ones Adams–Bashforth of order 2, 3, then 4 on the ε
//!   history.
//! - DDIM η: A1111's "Eta DDIM", default 0. With η > 0 each step draws `randn` of the sample's
//!   shape from the image's generator; with η = 0 that draw is multiplied by 0 and skipped here.
//! - DDIM CFG++ (`ddim_cfgpp`, CFG++ of Chung et al. 2024): DDIM whose guidance scale is
//!   A1111's CFG divided by 12.5 and whose step re-noises along the *unconditional* ε
//!   (x̂₀ still comes from the guided ε); it asks the pipeline for both through
//!   [`Scheduler::guidance`] and [`Scheduler::step_with_unconditional`].
//! - img2img (`sample_img2img`): of `steps`, t_enc = ⌊min(strength, 0.999)·steps⌋ (the hires
//!   fix's pass: t_enc = kept − 1, A1111's `setup_img2img_steps` given the pass's steps); the
//!   sample is noised to timestep `timesteps[t_enc]` and the sampler runs over
//!   `timesteps[..t_enc]`, from the top of that list: for DDIM the tail of the txt2img
//!   evaluations, for PLMS a fresh start (its pseudo Euler step again) at `timesteps[t_enc − 1]`.
//!   [`Scheduler::begin_part_way`] makes that plan. At strength 1 every evaluation runs (A1111
//!   caps it at 0.999, one evaluation fewer).
//!
//! Arithmetic is f32 in A1111's operation order; ᾱ values enter as f32 scalars.

use sd_core::{
    Error, Guidance, HostTensor, NormalSource, PartWay, Result, ScheduleState, Scheduler,
};

use crate::alpha_family;
use crate::config::{ClassDefaults, PredictionType, SchedulerConfig};
use crate::elementwise::{check_index, check_step, check_steps, map2, map3};
use crate::ksampler::model_alphas_cumprod;

/// The noise schedule of SD 1.x (LDM's `linear_start`/`linear_end`) for configs that leave it out.
const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");
/// A1111 spaces its timesteps over 1000 training steps, whatever the model says.
const A1111_TRAIN_TIMESTEPS: usize = 1000;

/// ᾱ of the LDM model A1111 runs its timestep samplers on (`sampler` names it in errors):
/// ε-prediction models over 1000 training timesteps only, what A1111's code assumes.
pub(crate) fn a1111_alphas_cumprod(config: &SchedulerConfig, sampler: &str) -> Result<Vec<f32>> {
    let noise = config.noise_schedule(&DEFAULTS)?;
    if noise.prediction_type != PredictionType::Epsilon {
        return Err(Error::invalid_argument(
            "prediction_type",
            format!("A1111's {sampler} is reproduced for ε-prediction models only"),
        ));
    }
    if noise.num_train_timesteps != A1111_TRAIN_TIMESTEPS {
        return Err(Error::invalid_argument(
            "num_train_timesteps",
            format!(
                "A1111's {sampler} spaces 1000 training timesteps; the config has {}",
                noise.num_train_timesteps
            ),
        ));
    }
    Ok(model_alphas_cumprod(
        &noise.beta_schedule,
        noise.num_train_timesteps,
    ))
}

/// Which of A1111's timestep samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestepSamplerKind {
    /// A1111's `ddim`: "DDIM".
    Ddim,
    /// A1111's `ddim_cfgpp`: "DDIM CFG++".
    DdimCfgPp,
    /// A1111's `plms`: "PLMS".
    Plms,
}

impl TimestepSamplerKind {
    /// The name A1111 shows and writes as `Sampler: …`.
    pub fn a1111_name(self) -> &'static str {
        match self {
            TimestepSamplerKind::Ddim => "DDIM",
            TimestepSamplerKind::DdimCfgPp => "DDIM CFG++",
            TimestepSamplerKind::Plms => "PLMS",
        }
    }
}

/// A1111's CFG++ samplers divide its CFG scale by 12.5 (`cond_scale_miltiplier`).
const CFG_PP_SCALE_MULTIPLIER: f64 = 1.0 / 12.5;

/// One model evaluation of the plan.
#[derive(Debug, Clone, Copy)]
struct Evaluation {
    /// Position in A1111's timestep list of the step this evaluation belongs to.
    index: usize,
    /// The timestep the model sees.
    timestep: usize,
    /// PLMS: the second evaluation of the first step (at the next timestep).
    second: bool,
}

/// The run's timesteps and evaluations.
#[derive(Debug, Clone, Default)]
struct Plan {
    steps: usize,
    /// A1111's `timesteps`, ascending.
    timesteps: Vec<usize>,
    evaluations: Vec<Evaluation>,
    model_timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
}

/// What PLMS carries between evaluations.
#[derive(Debug, Clone, Default)]
struct History {
    /// The first step's sample and ε, for its second evaluation.
    first_step: Option<(HostTensor, HostTensor)>,
    /// Past ε, oldest first (at most three).
    old_eps: Vec<HostTensor>,
}

/// A1111's DDIM or PLMS (see the module docs).
#[derive(Debug, Clone)]
pub struct A1111TimestepSampler {
    kind: TimestepSamplerKind,
    eta: f32,
    plan: Plan,
    history: History,
}

impl A1111TimestepSampler {
    /// A sampler over the noise schedule of `config` (the model's training betas). `eta` is
    /// DDIM's (A1111's default 0); PLMS takes none.
    pub fn new(config: &SchedulerConfig, kind: TimestepSamplerKind, eta: f32) -> Result<Self> {
        let alphas_cumprod = a1111_alphas_cumprod(config, kind.a1111_name())?;
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::invalid_argument(
                "eta",
                format!("must be a finite number ≥ 0, got {eta}"),
            ));
        }
        Ok(A1111TimestepSampler {
            kind,
            eta,
            plan: Plan {
                alphas_cumprod,
                ..Plan::default()
            },
            history: History::default(),
        })
    }

    pub fn kind(&self) -> TimestepSamplerKind {
        self.kind
    }

    /// ᾱ at A1111 timestep position `index`, and the "previous" ᾱ (the next lower timestep's,
    /// ᾱ₀ below the lowest).
    fn alphas(&self, index: usize) -> (f32, f32) {
        let ac = &self.plan.alphas_cumprod;
        let a_t = ac[self.plan.timesteps[index]];
        let a_prev = match index {
            0 => ac[0],
            _ => ac[self.plan.timesteps[index - 1]],
        };
        (a_t, a_prev)
    }

    /// `(x − √(1 − ᾱ_t)·ε)/√ᾱ_t`: the clean-sample estimate at position `index`.
    fn predicted_original(
        &self,
        index: usize,
        x: &HostTensor,
        eps: &HostTensor,
    ) -> Result<HostTensor> {
        let (a_t, _) = self.alphas(index);
        let sqrt_one_minus = (1.0 - a_t).sqrt();
        let sqrt_a = a_t.sqrt();
        map2("predicted x0", x, eps, |x, e| {
            (x - sqrt_one_minus * e) / sqrt_a
        })
    }

    /// PLMS' `get_x_prev_and_pred_x0`: the deterministic DDIM update with ε.
    fn plms_update(&self, index: usize, x: &HostTensor, eps: &HostTensor) -> Result<HostTensor> {
        let (_, a_prev) = self.alphas(index);
        let pred_x0 = self.predicted_original(index, x, eps)?;
        let dir = (1.0 - a_prev).sqrt();
        let sqrt_prev = a_prev.sqrt();
        map2("PLMS step", &pred_x0, eps, |p, e| sqrt_prev * p + dir * e)
    }

    /// A1111's DDIM step: x̂₀ from `eps`, the direction back to the previous timestep along
    /// `direction` (`eps` itself for DDIM, the unconditional ε for DDIM CFG++).
    fn ddim_step(
        &self,
        index: usize,
        x: &HostTensor,
        eps: &HostTensor,
        direction: &HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        let (a_t, a_prev) = self.alphas(index);
        // A1111 computes σ_t in f64 from the f32 table and uses it as an f32 scalar.
        let (a_t64, a_prev64) = (f64::from(a_t), f64::from(a_prev));
        let sigma_t = (f64::from(self.eta)
            * ((1.0 - a_prev64) / (1.0 - a_t64) * (1.0 - a_t64 / a_prev64)).sqrt())
            as f32;
        let pred_x0 = self.predicted_original(index, x, eps)?;
        let dir = (1.0 - a_prev - sigma_t * sigma_t).sqrt();
        let sqrt_prev = a_prev.sqrt();
        let deterministic = map2("DDIM step", &pred_x0, direction, |p, e| {
            sqrt_prev * p + dir * e
        })?;
        if self.eta == 0.0 {
            return Ok(deterministic);
        }
        let noise = generator.randn(x.shape());
        map2("DDIM noise", &deterministic, &noise, |x, n| x + sigma_t * n)
    }

    /// ε′ of a PLMS step after the first: Adams–Bashforth on the ε history.
    fn plms_eps(&self, eps: &HostTensor) -> Result<HostTensor> {
        let old = &self.history.old_eps;
        let n = old.len();
        match n {
            1 => map2("PLMS", eps, &old[0], |e, o1| (3.0 * e - o1) / 2.0),
            2 => map3("PLMS", eps, &old[1], &old[0], |e, o1, o2| {
                (23.0 * e - 16.0 * o1 + 5.0 * o2) / 12.0
            }),
            _ => {
                let partial = map3("PLMS", eps, &old[n - 1], &old[n - 2], |e, o1, o2| {
                    55.0 * e - 59.0 * o1 + 37.0 * o2
                })?;
                map2("PLMS", &partial, &old[n - 3], |s, o3| (s - 9.0 * o3) / 24.0)
            }
        }
    }

    fn remember_eps(&mut self, eps: HostTensor) {
        self.history.old_eps.push(eps);
        if self.history.old_eps.len() >= 4 {
            self.history.old_eps.remove(0);
        }
    }

    fn plms_step(
        &mut self,
        evaluation: Evaluation,
        x: &HostTensor,
        eps: &HostTensor,
    ) -> Result<HostTensor> {
        let index = evaluation.index;
        if evaluation.second {
            let (x_start, e_t) = self.history.first_step.take().ok_or_else(|| {
                Error::invalid_argument(
                    "index",
                    "steps taken out of order: PLMS' second evaluation came before its first",
                )
            })?;
            let e_prime = map2("PLMS", &e_t, eps, |a, b| (a + b) / 2.0)?;
            let next = self.plms_update(index, &x_start, &e_prime)?;
            self.remember_eps(e_t);
            return Ok(next);
        }
        if self.history.old_eps.is_empty() {
            // Pseudo improved Euler: the sample the second evaluation runs on.
            let x_prev = self.plms_update(index, x, eps)?;
            self.history.first_step = Some((x.clone(), eps.clone()));
            return Ok(x_prev);
        }
        let e_prime = self.plms_eps(eps)?;
        let next = self.plms_update(index, x, &e_prime)?;
        self.remember_eps(eps.clone());
        Ok(next)
    }
}

impl A1111TimestepSampler {
    /// The evaluations of a run over `timesteps[..=top]`, walked from `top` down to position 1
    /// (PLMS: the first step evaluates twice, the second time at the next timestep).
    fn plan_evaluations(&mut self, top: usize) {
        let timesteps = &self.plan.timesteps;
        let mut evaluations = Vec::with_capacity(top + 1);
        for index in (1..=top).rev() {
            evaluations.push(Evaluation {
                index,
                timestep: timesteps[index],
                second: false,
            });
            if self.kind == TimestepSamplerKind::Plms && index == top {
                evaluations.push(Evaluation {
                    index,
                    timestep: timesteps[index - 1],
                    second: true,
                });
            }
        }
        self.plan.model_timesteps = evaluations.iter().map(|e| e.timestep as f64).collect();
        self.plan.evaluations = evaluations;
        self.history = History::default();
    }
}

impl Scheduler for A1111TimestepSampler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(steps, A1111_TRAIN_TIMESTEPS)?;
        if steps < 2 {
            return Err(Error::invalid_argument(
                "steps",
                format!(
                    "A1111's {} evaluates the model steps − 1 times; it needs at least 2 steps",
                    self.kind.a1111_name()
                ),
            ));
        }
        self.plan.timesteps = a1111_timesteps(steps);
        self.plan.steps = steps;
        self.plan_evaluations(self.plan.timesteps.len() - 1);
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
        check_step(index, self.plan.evaluations.len(), model_output, sample)?;
        let evaluation = self.plan.evaluations[index];
        match self.kind {
            TimestepSamplerKind::Ddim => self.ddim_step(
                evaluation.index,
                sample,
                model_output,
                model_output,
                generator,
            ),
            TimestepSamplerKind::DdimCfgPp => Err(Error::invalid_argument(
                "model_output",
                "A1111's DDIM CFG++ steps along the unconditional prediction: it is stepped \
                 with step_with_unconditional, as its guidance() asks",
            )),
            TimestepSamplerKind::Plms => self.plms_step(evaluation, sample, model_output),
        }
    }

    fn guidance(&self) -> Guidance {
        match self.kind {
            TimestepSamplerKind::DdimCfgPp => Guidance {
                scale_multiplier: CFG_PP_SCALE_MULTIPLIER,
                needs_unconditional: true,
            },
            TimestepSamplerKind::Ddim | TimestepSamplerKind::Plms => Guidance::default(),
        }
    }

    fn step_with_unconditional(
        &mut self,
        model_output: &HostTensor,
        unconditional: &HostTensor,
        index: usize,
        sample: &HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        if self.kind != TimestepSamplerKind::DdimCfgPp {
            return self.step(model_output, index, sample, generator);
        }
        check_step(index, self.plan.evaluations.len(), model_output, sample)?;
        check_step(index, self.plan.evaluations.len(), unconditional, sample)?;
        let position = self.plan.evaluations[index].index;
        self.ddim_step(position, sample, model_output, unconditional, generator)
    }

    /// A1111's img2img rule on the txt2img plan: t_enc = ⌊min(strength, 0.999)·steps⌋, the
    /// run starts at the evaluation of `timesteps[t_enc − 1]`. Strength 1 (txt2img, and img2img
    /// at full strength) runs every evaluation. DDIM's part-way run is this tail; PLMS restarts
    /// there, so it answers through [`begin_part_way`](Scheduler::begin_part_way) only.
    fn start_index(&self, strength: f64) -> Result<usize> {
        check_strength(strength)?;
        if strength >= 1.0 {
            return Ok(0);
        }
        if self.kind == TimestepSamplerKind::Plms {
            return Err(Error::invalid_argument(
                "strength",
                "A1111's PLMS starts part-way with a plan of its own (its pseudo Euler step at \
                 the start timestep): begin_part_way makes it",
            ));
        }
        let t_enc = a1111_t_enc(strength, self.plan.steps);
        Ok(self
            .plan
            .evaluations
            .iter()
            .position(|e| e.index + 1 == t_enc)
            .unwrap_or(self.plan.evaluations.len()))
    }

    /// A1111's `sample_img2img`: the run over `timesteps[..t_enc]` from its top (see the
    /// module docs); the returned start is 0, the plan holds only what runs.
    fn begin_part_way(&mut self, start: PartWay) -> Result<usize> {
        let Some(t_enc) = part_way_t_enc(start, self.plan.steps)? else {
            return Ok(0);
        };
        let top = t_enc.saturating_sub(1).min(self.plan.timesteps.len() - 1);
        self.plan_evaluations(top);
        Ok(0)
    }
}

/// A1111's `CompVisSampler.get_timesteps`: `range(0, 1000, 1000 // steps) + 1`, clipped to 999.
pub(crate) fn a1111_timesteps(steps: usize) -> Vec<usize> {
    let stride = A1111_TRAIN_TIMESTEPS / steps;
    (0..A1111_TRAIN_TIMESTEPS)
        .step_by(stride)
        .map(|t| (t + 1).min(A1111_TRAIN_TIMESTEPS - 1))
        .collect()
}

/// A1111's img2img t_enc = ⌊min(strength, 0.999)·steps⌋ (truncation as Python's int()).
fn a1111_t_enc(strength: f64, steps: usize) -> usize {
    (strength.min(0.999) * steps as f64) as usize
}

/// The t_enc of A1111's `setup_img2img_steps` for a part-way start of a timestep sampler set
/// to `steps`, or `None` for a run from pure noise (strength 1: the txt2img plan).
pub(crate) fn part_way_t_enc(start: PartWay, steps: usize) -> Result<Option<usize>> {
    match start {
        PartWay::Strength(strength) => {
            check_strength(strength)?;
            Ok((strength < 1.0).then(|| a1111_t_enc(strength, steps)))
        }
        // Given the pass's steps, A1111 runs timesteps[..kept − 1] of the stretched schedule.
        PartWay::Keeping { kept, strength } => {
            check_strength(strength)?;
            Ok(Some(kept.saturating_sub(1)))
        }
    }
}

fn check_strength(strength: f64) -> Result<()> {
    if (0.0..=1.0).contains(&strength) {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            "strength",
            format!("must be in [0, 1], got {strength}"),
        ))
    }
}

impl ScheduleState for Plan {
    fn timesteps(&self) -> &[f64] {
        &self.model_timesteps
    }

    fn steps(&self) -> usize {
        self.steps
    }

    /// A1111 starts its timestep samplers from unscaled noise.
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// The UNet sees the sample as it is.
    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        check_index(index, self.evaluations.len())?;
        Ok(sample.clone())
    }

    /// `√ᾱ·x₀ + √(1 − ᾱ)·ε` at the timestep one position above the evaluation's: the level
    /// A1111's img2img noises to before the loop's first evaluation at `index`.
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        check_index(index, self.evaluations.len())?;
        let position = (self.evaluations[index].index + 1).min(self.timesteps.len() - 1);
        let alpha = self.alphas_cumprod[self.timesteps[position]];
        alpha_family::add_noise(alpha, original, noise)
    }
}
