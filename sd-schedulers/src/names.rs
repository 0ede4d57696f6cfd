//! Scheduler names, case-insensitive, in two vocabularies:
//!
//! - A1111's k-diffusion sampler names (`Euler a`, `DPM++ 2M`, `DPM2 a Karras`, `k_euler`, …;
//!   [`crate::a1111`]) build a [`KDiffusionSampler`]: A1111's algorithm on A1111's σ schedule,
//!   the schedule type from a combined name or [`SamplerOptions::schedule_type`].
//! - A1111's own `DDIM`, `DDIM CFG++` and `PLMS` build an [`A1111TimestepSampler`], its `UniPC` an
//!   [`A1111UniPcSampler`], its `LCM` an [`A1111LcmSampler`] (A1111's algorithms, not diffusers'
//!   classes).
//! - diffusers class names (the config's `_class_name`) build that class from the config as it
//!   stands; the short names below (`PNDM`, `DDPM`, …) build a class with the
//!   options the name implies.

use sd_core::{Error, Result, Scheduler};

use crate::a1111::split_a1111_name;
use crate::a1111_timesteps::{A1111TimestepSampler, TimestepSamplerKind};
use crate::a1111_unipc::A1111UniPcSampler;
use crate::config::SchedulerConfig;
use crate::ksampler::{
    A1111DpmSolverSampler, A1111LcmSampler, KDiffusionSampler, KSamplerKind, KSamplerSetup,
    ScheduleType,
};
use crate::{
    DdimScheduler, DdpmScheduler, DeisScheduler, DpmSolverScheduler, DpmSolverSdeScheduler,
    DpmSolverSinglestepScheduler, EulerAncestralScheduler, EulerScheduler, HeunScheduler,
    Kdpm2AncestralScheduler, Kdpm2Scheduler, LcmScheduler, LmsScheduler, PndmScheduler,
    TcdScheduler, UniPcScheduler,
};

use SchedulerKind::*;

/// What a name builds: a diffusers scheduler class, or one of A1111's k-diffusion samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// A1111's k-diffusion sampler ([`KDiffusionSampler`]).
    A1111(KSamplerKind),
    /// A1111's own DDIM or PLMS ([`A1111TimestepSampler`]).
    A1111Timesteps(TimestepSamplerKind),
    /// A1111's LCM ([`A1111LcmSampler`]).
    A1111Lcm,
    /// A1111's UniPC ([`A1111UniPcSampler`]).
    A1111UniPc,
    Pndm,
    Ddim,
    Ddpm,
    Lms,
    Euler,
    EulerAncestral,
    Heun,
    DpmSolverMultistep,
    DpmSolverSde,
    UniPc,
    Lcm,
    DpmSolverSinglestep,
    Kdpm2,
    Kdpm2Ancestral,
    Deis,
    Tcd,
}

/// Settings a sampler name implies on top of the config.
#[derive(Debug, Clone, Copy)]
struct Implied {
    karras: Option<bool>,
    algorithm: Option<&'static str>,
}

const NONE: Implied = Implied {
    karras: None,
    algorithm: None,
};

/// Every accepted diffusers name, with its class and what it implies.
const NAMES: &[(&str, SchedulerKind, Implied)] = &[
    ("PNDMScheduler", Pndm, NONE),
    ("PNDM", Pndm, NONE),
    ("PLMS", A1111Timesteps(TimestepSamplerKind::Plms), NONE),
    ("DDIMScheduler", Ddim, NONE),
    ("DDIM", A1111Timesteps(TimestepSamplerKind::Ddim), NONE),
    (
        "DDIM CFG++",
        A1111Timesteps(TimestepSamplerKind::DdimCfgPp),
        NONE,
    ),
    (
        "ddim_cfgpp",
        A1111Timesteps(TimestepSamplerKind::DdimCfgPp),
        NONE,
    ),
    ("DDPMScheduler", Ddpm, NONE),
    ("DDPM", Ddpm, NONE),
    ("LMSDiscreteScheduler", Lms, NONE),
    ("EulerDiscreteScheduler", Euler, NONE),
    ("EulerAncestralDiscreteScheduler", EulerAncestral, NONE),
    ("HeunDiscreteScheduler", Heun, NONE),
    ("DPMSolverMultistepScheduler", DpmSolverMultistep, NONE),
    ("DPMSolverSDEScheduler", DpmSolverSde, NONE),
    ("UniPCMultistepScheduler", UniPc, NONE),
    ("UniPC", A1111UniPc, NONE),
    ("LCMScheduler", Lcm, NONE),
    ("LCM", A1111Lcm, NONE),
    ("k_lcm", A1111Lcm, NONE),
    ("DPMSolverSinglestepScheduler", DpmSolverSinglestep, NONE),
    ("KDPM2DiscreteScheduler", Kdpm2, NONE),
    ("KDPM2AncestralDiscreteScheduler", Kdpm2Ancestral, NONE),
    ("DEISMultistepScheduler", Deis, NONE),
    ("DEIS", Deis, NONE),
    ("TCDScheduler", Tcd, NONE),
    ("TCD", Tcd, NONE),
];

/// The last entry of an unknown-name error's list: the names [`known_names`] leaves out.
const COMBINED_NAMES_HINT: &str =
    "an A1111 sampler name and a schedule type (DPM++ 2M Karras, Euler a Exponential, …)";

/// All names [`scheduler_from_name`] accepts, but the combined ones (an A1111 sampler name, a
/// space and a schedule type's label: `DPM++ 2M Karras`).
pub fn known_names() -> Vec<&'static str> {
    crate::a1111::a1111_samplers()
        .iter()
        .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied()))
        .chain(NAMES.iter().map(|(name, _, _)| *name))
        .collect()
}

/// The diffusers names only (class names and the short names that imply a class).
pub fn diffusers_names() -> Vec<&'static str> {
    NAMES
        .iter()
        .filter(|(_, kind, _)| !kind.is_a1111())
        .map(|(name, _, _)| *name)
        .collect()
}

/// The scheduler class a name stands for.
pub fn kind_of(name: &str) -> Result<SchedulerKind> {
    if let Some((sampler, _)) = split_a1111_name(name) {
        return Ok(SchedulerKind::A1111(sampler.kind));
    }
    lookup(name).map(|(kind, _)| kind)
}

fn lookup(name: &str) -> Result<(SchedulerKind, Implied)> {
    let wanted = name.trim();
    NAMES
        .iter()
        .find(|(known, _, _)| known.eq_ignore_ascii_case(wanted))
        .map(|&(_, kind, implied)| (kind, implied))
        .ok_or_else(|| Error::UnknownScheduler {
            name: name.to_string(),
            known: known_names()
                .into_iter()
                .map(str::to_string)
                .chain([COMBINED_NAMES_HINT.to_string()])
                .collect(),
        })
}

/// Options a request may set on top of the config and the name.
#[derive(Debug, Clone, Copy, Default)]
pub struct SamplerOptions {
    /// η: DDIM's (`None`: 0, deterministic DDIM), TCD's γ (`None`: 0, as `StableDiffusionPipeline`
    /// passes it) and A1111's ancestral samplers' (`None`: 1, as A1111 defaults it); other
    /// schedulers ignore it, as diffusers does (a pipeline passes it
    /// to `step` rather than through the config).
    pub eta: Option<f32>,
    /// Karras σ spacing on or off; `None`: what the name implies, else the config. Turning it
    /// on for a class without the option ([`SchedulerKind::takes_karras_sigmas`]) is an error.
    /// For an A1111 sampler, `Some(true)` without a schedule type means Karras.
    pub karras_sigmas: Option<bool>,
    /// A1111's schedule type, for A1111 sampler names (a combined name's wins); `None` or
    /// Automatic: the sampler's default. Setting one for a diffusers name is an error.
    pub schedule_type: Option<ScheduleType>,
}

impl SchedulerKind {
    /// Whether the name runs one of A1111's own algorithms rather than a diffusers class.
    pub fn is_a1111(self) -> bool {
        matches!(self, A1111(_) | A1111Timesteps(_) | A1111Lcm | A1111UniPc)
    }

    /// Whether the class can space its σ schedule as Karras et al. (diffusers'
    /// `use_karras_sigmas`; its Euler-ancestral class has no such option).
    pub fn takes_karras_sigmas(self) -> bool {
        matches!(
            self,
            A1111(_)
                | A1111Lcm
                | Lms
                | Euler
                | Heun
                | DpmSolverMultistep
                | DpmSolverSde
                | UniPc
                | DpmSolverSinglestep
                | Kdpm2
                | Kdpm2Ancestral
                | Deis
        )
    }
}

/// Build the scheduler `name` from `config` (see the module docs for the names).
pub fn scheduler_from_name(name: &str, config: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    scheduler_from_name_with(name, config, SamplerOptions::default())
}

/// [`scheduler_from_name`] with [`SamplerOptions`].
pub fn scheduler_from_name_with(
    name: &str,
    config: &SchedulerConfig,
    options: SamplerOptions,
) -> Result<Box<dyn Scheduler>> {
    if let Some((sampler, suffix)) = split_a1111_name(name) {
        let karras = options
            .karras_sigmas
            .and_then(|on| on.then_some(ScheduleType::Karras));
        let chosen = suffix
            .or(options.schedule_type)
            .or(karras)
            .unwrap_or(ScheduleType::Automatic);
        if let Some(driver) = sampler.kind.dpm_solver() {
            return Ok(Box::new(A1111DpmSolverSampler::new(
                config,
                driver,
                sampler.effective_schedule(chosen),
                options.eta.unwrap_or(1.0),
            )?));
        }
        let setup = KSamplerSetup {
            kind: sampler.kind,
            schedule: sampler.effective_schedule(chosen),
            discard_penultimate_sigma: sampler.discard_penultimate_sigma,
            eta: options.eta.unwrap_or(1.0),
            s_noise: 1.0,
        };
        return Ok(Box::new(KDiffusionSampler::new(config, setup)?));
    }
    let (kind, implied) = lookup(name)?;
    if kind == A1111Lcm {
        // A k-diffusion style sampler: it takes A1111's schedule types.
        let karras = options
            .karras_sigmas
            .and_then(|on| on.then_some(ScheduleType::Karras));
        let chosen = options.schedule_type.or(karras);
        return Ok(Box::new(A1111LcmSampler::new(
            config,
            chosen.unwrap_or(ScheduleType::Automatic),
        )?));
    }
    if let Some(schedule) = options
        .schedule_type
        .filter(|&s| s != ScheduleType::Automatic)
    {
        return Err(Error::invalid_argument(
            "schedule type",
            format!(
                "{} is one of A1111's schedule types; the {} scheduler has none (use an A1111 \
                 sampler name, or --scheduler-config for a diffusers class)",
                schedule.label(),
                name.trim()
            ),
        ));
    }
    let mut config = config.clone();
    if let Some(on) = options.karras_sigmas.or(implied.karras) {
        if on && !kind.takes_karras_sigmas() {
            return Err(Error::invalid_argument(
                "karras_sigmas",
                format!("the {} sampler has no Karras σ option", name.trim()),
            ));
        }
        config.use_karras_sigmas = Some(on);
    }
    if let Some(algorithm) = implied.algorithm {
        config.algorithm_type = Some(algorithm.to_string());
    }
    Ok(match kind {
        Pndm => Box::new(PndmScheduler::new(&config)?),
        Ddim => Box::new(DdimScheduler::new(&config)?.with_eta(options.eta.unwrap_or(0.0))),
        Ddpm => Box::new(DdpmScheduler::new(&config)?),
        Lms => Box::new(LmsScheduler::new(&config)?),
        Euler => Box::new(EulerScheduler::new(&config)?),
        EulerAncestral => Box::new(EulerAncestralScheduler::new(&config)?),
        Heun => Box::new(HeunScheduler::new(&config)?),
        DpmSolverMultistep => Box::new(DpmSolverScheduler::new(&config)?),
        DpmSolverSde => Box::new(DpmSolverSdeScheduler::new(&config)?),
        UniPc => Box::new(UniPcScheduler::new(&config)?),
        Lcm => Box::new(LcmScheduler::new(&config)?),
        DpmSolverSinglestep => Box::new(DpmSolverSinglestepScheduler::new(&config)?),
        Kdpm2 => Box::new(Kdpm2Scheduler::new(&config)?),
        Kdpm2Ancestral => Box::new(Kdpm2AncestralScheduler::new(&config)?),
        Deis => Box::new(DeisScheduler::new(&config)?),
        Tcd => Box::new(TcdScheduler::new(&config)?.with_gamma(options.eta.unwrap_or(0.0))?),
        A1111Timesteps(kind) => Box::new(A1111TimestepSampler::new(
            &config,
            kind,
            options.eta.unwrap_or(0.0),
        )?),
        A1111UniPc => Box::new(A1111UniPcSampler::new(&config)?),
        A1111(_) | A1111Lcm => unreachable_a1111(name)?,
    })
}

/// `lookup` never yields an A1111 kind (those names are split off first); say so instead of
/// panicking if the tables ever disagree.
fn unreachable_a1111(name: &str) -> Result<Box<dyn Scheduler>> {
    Err(Error::invalid_argument(
        "scheduler",
        format!(
            "`{}` is listed as a diffusers name but is an A1111 sampler",
            name.trim()
        ),
    ))
}
