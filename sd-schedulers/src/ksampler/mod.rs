//! AUTOMATIC1111's k-diffusion samplers: k-diffusion's sampling functions run over a σ schedule
//! the way A1111 runs them, as a [`Scheduler`] the pipeline steps one model evaluation at a time.
//!
//! What A1111 does, and this family does with it:
//! - σ schedule: the schedule type's σ between the model's own σ_min and σ_max
//!   (`schedule_type.rs`, from the table in `model_sigmas.rs`), with one extra step whose
//!   next-to-last σ is dropped for DPM2 and DPM2 a ("discard penultimate sigma").
//! - Start: `x = noise · σ₀` ([`init_noise_sigma`](Scheduler::init_noise_sigma) is σ₀).
//! - Model: k-diffusion's `CompVisDenoiser`: the UNet sees `x · c_in` with c_in = 1/√(σ² + 1)
//!   at the continuous timestep t(σ) (`sigma_to_t`), and denoised = x − σ·ε.
//! - Guidance: A1111 mixes the two denoised estimates, the pipeline mixes the two ε; with
//!   denoised = x − σ·ε the two are the same affine map, so the results agree to f32 rounding.
//! - Noise: ancestral samplers draw `randn` of the sample's shape from the lane's generator
//!   after each step, which is A1111's per-image generator continuing after the initial noise.
//!   (k-diffusion's Euler, Heun and DPM2 also draw a noise they only use with `s_churn` > 0,
//!   which A1111 leaves at 0; nothing after them reads the generator, so they skip the draw.)
//! - SDE noise: DPM++ SDE, DPM++ 2M SDE and DPM++ 3M SDE draw Brownian-tree noise (`brownian/`, torchsde's
//!   `BrownianTree` on torch's CPU generator) over [smallest positive σ, largest σ] of the whole
//!   schedule, seeded with the lane's seed, as A1111's `create_noise_sampler` seeds one tree per
//!   image from the image seeds (a lane of several images gets one tree of its whole shape,
//!   k-diffusion's rule for a single seed). The lane's generator itself is not drawn from.
//! - η = 1 and s_noise = 1 for the ancestral and SDE samplers (A1111's defaults).
//! - img2img starts at A1111's step: `steps − ⌊min(strength, 0.999)·steps⌋ − 1`.
//!
//! Second-order samplers list both evaluations of a step in [`timesteps`](Scheduler::timesteps)
//! (the second at σ_{i+1}, the log-midpoint, …); a step whose next σ is 0 takes one.

mod beta_quantile;
mod dpm_solver;
mod dpm_solver_steps;
mod lcm;
mod model_sigmas;
mod schedule_type;
mod sde;

pub(crate) use beta_quantile::beta_quantile;
pub use dpm_solver::{A1111DpmSolverSampler, DpmSolverKind};
pub use lcm::A1111LcmSampler;
pub(crate) use model_sigmas::model_alphas_cumprod;
pub use schedule_type::{BETA_SCHEDULE_ALPHA_BETA, ScheduleType};

use sd_core::{Error, HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::brownian::BrownianNoise;
use crate::config::{ClassDefaults, PredictionType, SchedulerConfig};
use crate::elementwise::{check_index, check_step, check_steps, map2, map3};
use crate::k_diffusion;
use crate::lms::{MAX_ORDER as LMS_ORDER, lms_update};
use model_sigmas::ModelSigmas;
pub(crate) use sde::SdeStep;
use sde::{MultistepSde, SolverType, ThirdOrderSde};

/// The noise schedule A1111's SD 1.x models are trained with (LDM's `linear_start` /
/// `linear_end`), for configs that leave it out.
const DEFAULTS: ClassDefaults = ClassDefaults::linear("linspace");

/// The k-diffusion sampling function a sampler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KSamplerKind {
    /// `sample_euler`: A1111's "Euler".
    Euler,
    /// `sample_euler_ancestral`: "Euler a".
    EulerAncestral,
    /// `sample_lms` (order 4): "LMS".
    Lms,
    /// `sample_heun`: "Heun".
    Heun,
    /// `sample_dpm_2`: "DPM2".
    Dpm2,
    /// `sample_dpm_2_ancestral`: "DPM2 a".
    Dpm2Ancestral,
    /// `sample_dpmpp_2s_ancestral`: "DPM++ 2S a".
    DpmPp2sAncestral,
    /// `sample_dpmpp_2m`: "DPM++ 2M".
    DpmPp2m,
    /// `sample_dpmpp_sde`: "DPM++ SDE".
    DpmPpSde,
    /// `sample_dpmpp_2m_sde` (midpoint solver): "DPM++ 2M SDE".
    DpmPp2mSde,
    /// `sample_dpmpp_2m_sde` with `solver_type='heun'`: "DPM++ 2M SDE Heun".
    DpmPp2mSdeHeun,
    /// `sample_dpmpp_3m_sde`: "DPM++ 3M SDE".
    DpmPp3mSde,
    /// `sample_dpm_fast`: "DPM fast" ([`A1111DpmSolverSampler`]: it plans in DPM-Solver's t,
    /// not over the σ schedule).
    DpmFast,
    /// `sample_dpm_adaptive`: "DPM adaptive" ([`A1111DpmSolverSampler`]).
    DpmAdaptive,
}

impl KSamplerKind {
    /// Whether the sampler adds fresh noise after each step (and takes η).
    pub fn is_ancestral(self) -> bool {
        matches!(
            self,
            KSamplerKind::EulerAncestral
                | KSamplerKind::Dpm2Ancestral
                | KSamplerKind::DpmPp2sAncestral
                | KSamplerKind::DpmFast
                | KSamplerKind::DpmAdaptive
        ) || self.uses_brownian_noise()
    }

    /// The DPM-Solver driver of DPM fast and DPM adaptive, which [`A1111DpmSolverSampler`]
    /// runs; `None` for the σ-schedule samplers [`KDiffusionSampler`] runs.
    pub fn dpm_solver(self) -> Option<DpmSolverKind> {
        match self {
            KSamplerKind::DpmFast => Some(DpmSolverKind::Fast),
            KSamplerKind::DpmAdaptive => Some(DpmSolverKind::Adaptive),
            _ => None,
        }
    }

    /// Whether its noise comes from a Brownian tree seeded with the image seed (the SDE
    /// samplers) rather than from the image's generator.
    pub fn uses_brownian_noise(self) -> bool {
        matches!(
            self,
            KSamplerKind::DpmPpSde
                | KSamplerKind::DpmPp2mSde
                | KSamplerKind::DpmPp2mSdeHeun
                | KSamplerKind::DpmPp3mSde
        )
    }

    /// `sample_dpmpp_2m_sde`'s solver type, for the samplers that run it.
    fn multistep_sde_solver(self) -> Option<SolverType> {
        match self {
            KSamplerKind::DpmPp2mSde => Some(SolverType::Midpoint),
            KSamplerKind::DpmPp2mSdeHeun => Some(SolverType::Heun),
            _ => None,
        }
    }

    /// Model evaluations per step (but one on a step that ends at σ = 0).
    fn evaluations_per_step(self) -> usize {
        match self {
            KSamplerKind::Heun
            | KSamplerKind::Dpm2
            | KSamplerKind::Dpm2Ancestral
            | KSamplerKind::DpmPp2sAncestral
            | KSamplerKind::DpmPpSde => 2,
            _ => 1,
        }
    }
}

/// How a k-diffusion sampler is set up: which function, on which schedule, with which options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KSamplerSetup {
    pub kind: KSamplerKind,
    /// A concrete schedule type ([`ScheduleType::Automatic`] is resolved by the caller).
    pub schedule: ScheduleType,
    /// Compute `steps + 1` σ and drop the next-to-last (A1111's DPM2 and DPM2 a).
    pub discard_penultimate_sigma: bool,
    /// Ancestral noise amount (A1111's "Eta", default 1).
    pub eta: f32,
    /// Scale of the ancestral noise (A1111's s_noise, default 1).
    pub s_noise: f32,
}

/// One model evaluation of the plan.
#[derive(Debug, Clone, Copy)]
struct Evaluation {
    /// The sampler step it belongs to (index into the σ schedule).
    step: usize,
    /// The second evaluation of a two-evaluation step.
    second: bool,
    /// The noise level the model is evaluated at.
    sigma: f32,
}

/// The run's σ schedule and its evaluations: the read-only side of the sampler.
#[derive(Debug, Clone)]
struct Plan {
    steps: usize,
    /// σ of each step, then 0.
    sigmas: Vec<f32>,
    evaluations: Vec<Evaluation>,
    timesteps: Vec<f64>,
}

/// What a step carries from its first evaluation to its second, and across steps.
#[derive(Debug, Clone, Default)]
struct History {
    /// The sample at the start of a two-evaluation step.
    start: Option<HostTensor>,
    /// Heun: the first evaluation's derivative.
    derivative: Option<HostTensor>,
    /// DPM++ 2M, 2M SDE, 3M SDE: the previous step's denoised estimate.
    old_denoised: Option<HostTensor>,
    /// DPM++ 3M SDE: the denoised estimate of the step before the previous one.
    older_denoised: Option<HostTensor>,
    /// LMS: past derivatives, oldest first.
    derivatives: Vec<HostTensor>,
    /// DPM++ SDE: the first evaluation's denoised estimate.
    denoised: Option<HostTensor>,
    /// DPM++ 2M SDE, 3M SDE: the previous step's h (log-σ step).
    h_last: Option<f32>,
    /// DPM++ 3M SDE: the h of the step before the previous one.
    h_older: Option<f32>,
}

/// One of A1111's k-diffusion samplers (see the module docs).
#[derive(Debug, Clone)]
pub struct KDiffusionSampler {
    setup: KSamplerSetup,
    prediction: PredictionType,
    num_train_timesteps: usize,
    model: ModelSigmas,
    plan: Plan,
    history: History,
    /// The SDE samplers' Brownian-tree noise, made at the run's first step.
    brownian: Option<BrownianNoise>,
}

impl KDiffusionSampler {
    /// A sampler over the noise schedule of `config` (the model's training betas).
    pub fn new(config: &SchedulerConfig, setup: KSamplerSetup) -> Result<Self> {
        let noise = config.noise_schedule(&DEFAULTS)?;
        config.require_noise_prediction(noise.prediction_type)?;
        if setup.kind.dpm_solver().is_some() {
            return Err(Error::invalid_argument(
                "scheduler",
                "DPM fast and DPM adaptive are A1111DpmSolverSampler, not σ-schedule samplers",
            ));
        }
        if setup.schedule == ScheduleType::Automatic {
            return Err(Error::invalid_argument(
                "schedule type",
                "Automatic must be resolved to the sampler's own schedule type first",
            ));
        }
        if !(setup.eta.is_finite() && setup.eta >= 0.0) {
            return Err(Error::invalid_argument(
                "eta",
                format!("must be a finite number ≥ 0, got {}", setup.eta),
            ));
        }
        Ok(KDiffusionSampler {
            setup,
            prediction: noise.prediction_type,
            num_train_timesteps: noise.num_train_timesteps,
            model: ModelSigmas::new(&noise.beta_schedule, noise.num_train_timesteps),
            plan: Plan {
                steps: 0,
                sigmas: Vec::new(),
                evaluations: Vec::new(),
                timesteps: Vec::new(),
            },
            history: History::default(),
            brownian: None,
        })
    }

    pub fn setup(&self) -> &KSamplerSetup {
        &self.setup
    }

    /// The σ schedule of the current run: one σ per step, then 0 (what A1111's `get_sigmas`
    /// returns).
    pub fn sigmas(&self) -> &[f32] {
        &self.plan.sigmas
    }

    /// The noise level of each model evaluation.
    pub fn evaluation_sigmas(&self) -> Vec<f32> {
        self.plan.evaluations.iter().map(|e| e.sigma).collect()
    }

    /// A1111's `get_sigmas(steps)` for this sampler's schedule type and discard rule.
    fn schedule_sigmas(&self, steps: usize) -> Vec<f32> {
        let discard = self.setup.discard_penultimate_sigma;
        let mut sigmas = self
            .setup
            .schedule
            .sigmas(&self.model, steps + usize::from(discard));
        if discard {
            // [..., σ_{n−1}, σ_n, 0] → [..., σ_{n−1}, 0]
            let last = sigmas.len() - 1;
            sigmas.remove(last - 1);
        }
        sigmas
    }

    /// The evaluations of step `i` of `sigmas`.
    fn plan_step(&self, sigmas: &[f32], step: usize, out: &mut Vec<Evaluation>) {
        let (sigma, next) = (sigmas[step], sigmas[step + 1]);
        out.push(Evaluation {
            step,
            second: false,
            sigma,
        });
        let second = match self.setup.kind {
            KSamplerKind::Heun => (next != 0.0).then_some(next),
            KSamplerKind::Dpm2 => (next != 0.0).then(|| log_midpoint(sigma, next)),
            KSamplerKind::Dpm2Ancestral => {
                let (down, _) = ancestral_step(sigma, next, self.setup.eta);
                (down != 0.0).then(|| log_midpoint(sigma, down))
            }
            KSamplerKind::DpmPp2sAncestral => {
                let (down, _) = ancestral_step(sigma, next, self.setup.eta);
                (down != 0.0).then(|| SingleStep::new(sigma, down).midpoint_sigma())
            }
            KSamplerKind::DpmPpSde => {
                (next != 0.0).then(|| SdeStep::new(sigma, next).midpoint_sigma())
            }
            _ => None,
        };
        if let Some(sigma) = second {
            out.push(Evaluation {
                step,
                second: true,
                sigma,
            });
        }
    }

    /// The denoised estimate from the model output at noise level `sigma`
    /// (k-diffusion's `CompVisDenoiser` / `CompVisVDenoiser`).
    fn denoised(
        &self,
        sigma: f32,
        sample: &HostTensor,
        model_output: &HostTensor,
    ) -> Result<HostTensor> {
        compvis_denoised(self.prediction, sigma, sample, model_output)
    }

    /// Add `s_noise · σ_up ·` fresh noise from `generator` to `x`.
    fn add_ancestral_noise(
        &self,
        x: HostTensor,
        sigma_up: f32,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        let noise = generator.randn(x.shape());
        let s_noise = self.setup.s_noise;
        map2("ancestral noise", &x, &noise, |x, n| {
            x + n * s_noise * sigma_up
        })
    }

    /// The run's Brownian-tree noise, made on first use: a tree over the schedule's
    /// [smallest positive σ, largest σ] for samples like `x`, seeded with the lane's seed.
    fn brownian(
        &mut self,
        x: &HostTensor,
        generator: &dyn NormalSource,
    ) -> Result<&mut BrownianNoise> {
        if self.brownian.is_none() {
            let sigmas = &self.plan.sigmas;
            let positive = sigmas.iter().copied().filter(|&s| s > 0.0);
            let sigma_min = positive.fold(f32::INFINITY, f32::min);
            let sigma_max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let noise =
                BrownianNoise::new(sigma_min, sigma_max, x.shape(), generator.initial_seed())?;
            self.brownian = Some(noise);
        }
        match self.brownian.as_mut() {
            Some(noise) => Ok(noise),
            None => Err(out_of_order("the Brownian noise was not made")),
        }
    }

    fn take_start(&mut self) -> Result<HostTensor> {
        self.history
            .start
            .take()
            .ok_or_else(|| out_of_order("the second evaluation of a step came before its first"))
    }

    /// The first (or only) evaluation of step `i`: returns the next sample, or the sample the
    /// step's second evaluation runs on.
    fn first_evaluation(
        &mut self,
        i: usize,
        x: &HostTensor,
        denoised: HostTensor,
        has_second: bool,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        let (sigma, next) = (self.plan.sigmas[i], self.plan.sigmas[i + 1]);
        let eta = self.setup.eta;
        match self.setup.kind {
            KSamplerKind::Euler => euler(x, &denoised, sigma, next),
            KSamplerKind::EulerAncestral => {
                let (down, up) = ancestral_step(sigma, next, eta);
                let x = euler(x, &denoised, sigma, down)?;
                if next > 0.0 {
                    self.add_ancestral_noise(x, up, generator)
                } else {
                    Ok(x)
                }
            }
            KSamplerKind::Lms => {
                if self.history.derivatives.len() == LMS_ORDER {
                    self.history.derivatives.remove(0);
                }
                self.history.derivatives.push(to_d(x, &denoised, sigma)?);
                lms_update(&self.plan.sigmas, i, &self.history.derivatives, x)
            }
            KSamplerKind::Heun | KSamplerKind::Dpm2 if !has_second => {
                euler(x, &denoised, sigma, next)
            }
            KSamplerKind::Heun => {
                let d = to_d(x, &denoised, sigma)?;
                let dt = next - sigma;
                let x_2 = map2("Heun step", x, &d, |x, d| x + d * dt)?;
                self.history.start = Some(x.clone());
                self.history.derivative = Some(d);
                Ok(x_2)
            }
            KSamplerKind::Dpm2 => {
                let d = to_d(x, &denoised, sigma)?;
                let dt_1 = log_midpoint(sigma, next) - sigma;
                self.history.start = Some(x.clone());
                map2("DPM2 step", x, &d, |x, d| x + d * dt_1)
            }
            KSamplerKind::Dpm2Ancestral => {
                let (down, _) = ancestral_step(sigma, next, eta);
                if !has_second {
                    return euler(x, &denoised, sigma, down);
                }
                let d = to_d(x, &denoised, sigma)?;
                let dt_1 = log_midpoint(sigma, down) - sigma;
                self.history.start = Some(x.clone());
                map2("DPM2 a step", x, &d, |x, d| x + d * dt_1)
            }
            KSamplerKind::DpmPp2sAncestral => {
                let (down, up) = ancestral_step(sigma, next, eta);
                if has_second {
                    let step = SingleStep::new(sigma, down);
                    let (ratio, weight) = step.to_midpoint();
                    self.history.start = Some(x.clone());
                    return map2("DPM++ 2S a step", x, &denoised, |x, d| {
                        ratio * x - weight * d
                    });
                }
                let x = euler(x, &denoised, sigma, down)?;
                if next > 0.0 {
                    self.add_ancestral_noise(x, up, generator)
                } else {
                    Ok(x)
                }
            }
            KSamplerKind::DpmPp2m => {
                let (t, t_next) = (t_of(sigma), t_of(next));
                let h = t_next - t;
                let ratio = sigma_of(t_next) / sigma_of(t);
                let weight = (-h).exp_m1();
                let old = self.history.old_denoised.replace(denoised.clone());
                match old {
                    Some(old) if next != 0.0 => {
                        let h_last = t - t_of(self.plan.sigmas[i - 1]);
                        let r = h_last / h;
                        let (a, b) = (1.0 + 1.0 / (2.0 * r), 1.0 / (2.0 * r));
                        map3("DPM++ 2M step", x, &denoised, &old, |x, d, o| {
                            ratio * x - weight * (a * d - b * o)
                        })
                    }
                    _ => map2("DPM++ 2M step", x, &denoised, |x, d| ratio * x - weight * d),
                }
            }
            KSamplerKind::DpmPpSde if !has_second => euler(x, &denoised, sigma, next),
            KSamplerKind::DpmPpSde => {
                let (eta, s_noise) = (self.setup.eta, self.setup.s_noise);
                let noise = self.brownian(x, generator)?;
                let x_2 =
                    SdeStep::new(sigma, next).to_midpoint(x, &denoised, eta, s_noise, noise)?;
                self.history.start = Some(x.clone());
                self.history.denoised = Some(denoised);
                Ok(x_2)
            }
            KSamplerKind::DpmPp2mSde | KSamplerKind::DpmPp2mSdeHeun => {
                let old = self.history.old_denoised.replace(denoised.clone());
                if next == 0.0 {
                    return Ok(denoised);
                }
                let step = MultistepSde {
                    sigma,
                    next,
                    eta: self.setup.eta,
                    s_noise: self.setup.s_noise,
                    solver: self
                        .setup
                        .kind
                        .multistep_sde_solver()
                        .unwrap_or(SolverType::Midpoint),
                    previous: old.as_ref().zip(self.history.h_last),
                };
                let noise = self.brownian(x, generator)?;
                let (x, h) = step.step(x, &denoised, noise)?;
                self.history.h_last = Some(h);
                Ok(x)
            }
            KSamplerKind::DpmPp3mSde => {
                let denoised_1 = self.history.old_denoised.replace(denoised.clone());
                let denoised_2 =
                    std::mem::replace(&mut self.history.older_denoised, denoised_1.clone());
                if next == 0.0 {
                    return Ok(denoised);
                }
                let step = ThirdOrderSde {
                    sigma,
                    next,
                    eta: self.setup.eta,
                    s_noise: self.setup.s_noise,
                    previous: denoised_1.as_ref().zip(self.history.h_last),
                    before_previous: denoised_2.as_ref().zip(self.history.h_older),
                };
                let noise = self.brownian(x, generator)?;
                let (x, h) = step.step(x, &denoised, noise)?;
                self.history.h_older = self.history.h_last.replace(h);
                Ok(x)
            }
            // `new` refused them.
            KSamplerKind::DpmFast | KSamplerKind::DpmAdaptive => Err(out_of_order(
                "DPM fast and DPM adaptive are not σ-schedule samplers",
            )),
        }
    }

    /// The second evaluation of step `i`, on `x_2`: returns the next sample.
    fn second_evaluation(
        &mut self,
        i: usize,
        x_2: &HostTensor,
        denoised: HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        let (sigma, next) = (self.plan.sigmas[i], self.plan.sigmas[i + 1]);
        let eta = self.setup.eta;
        let x = self.take_start()?;
        match self.setup.kind {
            KSamplerKind::Heun => {
                let d = self
                    .history
                    .derivative
                    .take()
                    .ok_or_else(|| out_of_order("Heun's second evaluation lost its first"))?;
                let d_2 = to_d(x_2, &denoised, next)?;
                let dt = next - sigma;
                map3("Heun step", &x, &d, &d_2, |x, d, d_2| {
                    x + (d + d_2) / 2.0 * dt
                })
            }
            KSamplerKind::Dpm2 => {
                let mid = log_midpoint(sigma, next);
                let d_2 = to_d(x_2, &denoised, mid)?;
                let dt_2 = next - sigma;
                map2("DPM2 step", &x, &d_2, |x, d| x + d * dt_2)
            }
            KSamplerKind::Dpm2Ancestral => {
                let (down, up) = ancestral_step(sigma, next, eta);
                let mid = log_midpoint(sigma, down);
                let d_2 = to_d(x_2, &denoised, mid)?;
                let dt_2 = down - sigma;
                let x = map2("DPM2 a step", &x, &d_2, |x, d| x + d * dt_2)?;
                self.add_ancestral_noise(x, up, generator)
            }
            KSamplerKind::DpmPp2sAncestral => {
                let (down, up) = ancestral_step(sigma, next, eta);
                let (ratio, weight) = SingleStep::new(sigma, down).to_end();
                let x = map2("DPM++ 2S a step", &x, &denoised, |x, d| {
                    ratio * x - weight * d
                })?;
                if next > 0.0 {
                    self.add_ancestral_noise(x, up, generator)
                } else {
                    Ok(x)
                }
            }
            KSamplerKind::DpmPpSde => {
                let first =
                    self.history.denoised.take().ok_or_else(|| {
                        out_of_order("DPM++ SDE's second evaluation lost its first")
                    })?;
                let (eta, s_noise) = (self.setup.eta, self.setup.s_noise);
                let noise = self.brownian(&x, generator)?;
                SdeStep::new(sigma, next).to_end(&x, &first, &denoised, eta, s_noise, noise)
            }
            _ => Err(out_of_order("this sampler takes one evaluation per step")),
        }
    }
}

impl Scheduler for KDiffusionSampler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(steps, self.num_train_timesteps)?;
        let sigmas = self.schedule_sigmas(steps);
        let mut evaluations = Vec::with_capacity(steps * self.setup.kind.evaluations_per_step());
        for step in 0..sigmas.len() - 1 {
            self.plan_step(&sigmas, step, &mut evaluations);
        }
        let timesteps = evaluations
            .iter()
            .map(|e| f64::from(self.model.sigma_to_t(e.sigma)))
            .collect();
        self.plan = Plan {
            steps,
            sigmas,
            evaluations,
            timesteps,
        };
        self.history = History::default();
        self.brownian = None;
        Ok(())
    }

    fn schedule(&self) -> &dyn ScheduleState {
        &self.plan
    }

    fn order(&self) -> usize {
        self.setup.kind.evaluations_per_step()
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
        let denoised = self.denoised(evaluation.sigma, sample, model_output)?;
        if evaluation.second {
            return self.second_evaluation(evaluation.step, sample, denoised, generator);
        }
        let has_second = self
            .plan
            .evaluations
            .get(index + 1)
            .is_some_and(|next| next.second);
        self.first_evaluation(evaluation.step, sample, denoised, has_second, generator)
    }

    /// A1111's img2img rule: of `steps`, run the last `⌊min(strength, 0.999)·steps⌋ + 1`.
    fn start_index(&self, strength: f64) -> Result<usize> {
        let first_step = a1111_start_step(strength, self.plan.steps)?;
        Ok(self.start_index_keeping(self.plan.steps - first_step))
    }

    /// The first evaluation of step `steps − kept`.
    fn start_index_keeping(&self, kept: usize) -> usize {
        let first_step = self.plan.steps.saturating_sub(kept);
        self.plan
            .evaluations
            .iter()
            .position(|e| e.step == first_step && !e.second)
            .unwrap_or(self.plan.evaluations.len())
    }
}

impl ScheduleState for Plan {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn steps(&self) -> usize {
        self.steps
    }

    /// A1111 starts from `noise · σ₀`.
    fn init_noise_sigma(&self) -> f32 {
        self.sigmas.first().copied().unwrap_or(1.0)
    }

    /// `x · c_in`, c_in = 1/√(σ² + 1) at the evaluation's σ.
    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        check_index(index, self.evaluations.len())?;
        Ok(compvis_model_input(sample, self.evaluations[index].sigma))
    }

    /// `x₀ + σ·ε` at the evaluation's σ (A1111's img2img start `x + noise · σ`).
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        check_index(index, self.evaluations.len())?;
        k_diffusion::add_noise(self.evaluations[index].sigma, original, noise)
    }
}

/// The first of `steps` that A1111's img2img runs for `strength` with a k-diffusion sampler:
/// it runs the last `⌊min(strength, 0.999)·steps⌋ + 1`.
fn a1111_start_step(strength: f64, steps: usize) -> Result<usize> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(Error::invalid_argument(
            "strength",
            format!("must be in [0, 1], got {strength}"),
        ));
    }
    // Truncation as Python's int().
    let t_enc = (strength.min(0.999) * steps as f64) as usize;
    Ok(steps.saturating_sub(t_enc + 1))
}

/// What k-diffusion's `CompVisDenoiser` hands the UNet: `x · c_in`, c_in = 1/√(σ² + 1).
fn compvis_model_input(sample: &HostTensor, sigma: f32) -> HostTensor {
    let c_in = 1.0 / (sigma * sigma + 1.0).sqrt();
    sample.mapv(|x| x * c_in)
}

/// k-diffusion's `CompVisDenoiser` / `CompVisVDenoiser` output: the denoised estimate from the
/// model output at noise level `sigma`.
fn compvis_denoised(
    prediction: PredictionType,
    sigma: f32,
    sample: &HostTensor,
    model_output: &HostTensor,
) -> Result<HostTensor> {
    match prediction {
        PredictionType::VPrediction => {
            let var = sigma * sigma + 1.0;
            let c_skip = 1.0 / var;
            let c_out = -sigma / var.sqrt();
            map2("denoise", sample, model_output, |x, v| {
                v * c_out + x * c_skip
            })
        }
        // `require_noise_prediction` refused `sample` at construction.
        PredictionType::Epsilon | PredictionType::Sample => {
            let c_out = -sigma;
            map2("denoise", sample, model_output, |x, e| x + e * c_out)
        }
    }
}

fn out_of_order(reason: &str) -> Error {
    Error::invalid_argument("index", format!("steps taken out of order: {reason}"))
}

/// The ODE derivative dx/dσ = (x − denoised)/σ (A1111's `to_d`).
fn to_d(x: &HostTensor, denoised: &HostTensor, sigma: f32) -> Result<HostTensor> {
    map2("derivative", x, denoised, |x, d| (x - d) / sigma)
}

/// One Euler step from σ to `to`: `x + d·(to − σ)`.
fn euler(x: &HostTensor, denoised: &HostTensor, sigma: f32, to: f32) -> Result<HostTensor> {
    let dt = to - sigma;
    map2("Euler step", x, denoised, |x, d| x + (x - d) / sigma * dt)
}

/// k-diffusion's `get_ancestral_step`: the σ to step down to and the noise σ to add back so
/// the step lands at `to`; η scales the noise part (η = 0: a plain step to `to`).
fn ancestral_step(from: f32, to: f32, eta: f32) -> (f32, f32) {
    if eta == 0.0 {
        return (to, 0.0);
    }
    let full = (to * to * (from * from - to * to) / (from * from)).sqrt();
    let candidate = eta * full;
    // Python's min(to, candidate): the first unless the second is smaller.
    let up = if candidate < to { candidate } else { to };
    let down = (to * to - up * up).sqrt();
    (down, up)
}

/// `exp(lerp(ln a, ln b, ½))`, torch's lerp at weight ½ (`b − (b − a)·½`).
fn log_midpoint(a: f32, b: f32) -> f32 {
    let (la, lb) = (a.ln(), b.ln());
    (lb - (lb - la) * 0.5).exp()
}

/// DPM-Solver's time t = −ln σ.
fn t_of(sigma: f32) -> f32 {
    -sigma.ln()
}

/// σ = e^(−t).
fn sigma_of(t: f32) -> f32 {
    (-t).exp()
}

/// DPM-Solver++(2S) from σ to `down` through the midpoint in t (r = ½).
struct SingleStep {
    t: f32,
    t_next: f32,
    h: f32,
    s: f32,
}

impl SingleStep {
    const R: f32 = 0.5;

    fn new(sigma: f32, down: f32) -> Self {
        let (t, t_next) = (t_of(sigma), t_of(down));
        let h = t_next - t;
        SingleStep {
            t,
            t_next,
            h,
            s: t + Self::R * h,
        }
    }

    /// σ of the midpoint evaluation.
    fn midpoint_sigma(&self) -> f32 {
        sigma_of(self.s)
    }

    /// (ratio, weight) of `x_2 = ratio·x − weight·denoised`.
    fn to_midpoint(&self) -> (f32, f32) {
        (
            sigma_of(self.s) / sigma_of(self.t),
            (-self.h * Self::R).exp_m1(),
        )
    }

    /// (ratio, weight) of `x' = ratio·x − weight·denoised₂`.
    fn to_end(&self) -> (f32, f32) {
        (sigma_of(self.t_next) / sigma_of(self.t), (-self.h).exp_m1())
    }
}
