//! Scheduler names: diffusers class names (the config's `_class_name`) and the sampler names
//! A1111 users type, case-insensitive.
//!
//! A class name builds that class from the config as it stands; an A1111 name also fixes the
//! options that name implies ("DPM++ 2M Karras" turns Karras sigmas on, "DPM++ 2M" off).

use sd_core::{Error, Result, Scheduler};

use crate::config::SchedulerConfig;
use crate::{
    DdimScheduler, DdpmScheduler, DpmSolverScheduler, EulerAncestralScheduler, EulerScheduler,
    HeunScheduler, LcmScheduler, LmsScheduler, PndmScheduler, UniPcScheduler,
};

use SchedulerKind::*;

/// The scheduler classes we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Pndm,
    Ddim,
    Ddpm,
    Lms,
    Euler,
    EulerAncestral,
    Heun,
    DpmSolverMultistep,
    UniPc,
    Lcm,
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

const fn karras(on: bool) -> Implied {
    Implied {
        karras: Some(on),
        algorithm: None,
    }
}

const fn dpm(algorithm: &'static str, karras: bool) -> Implied {
    Implied {
        karras: Some(karras),
        algorithm: Some(algorithm),
    }
}

/// Every accepted name, with its class and what it implies.
const NAMES: &[(&str, SchedulerKind, Implied)] = &[
    ("PNDMScheduler", Pndm, NONE),
    ("PNDM", Pndm, NONE),
    ("PLMS", Pndm, NONE),
    ("DDIMScheduler", Ddim, NONE),
    ("DDIM", Ddim, NONE),
    ("DDPMScheduler", Ddpm, NONE),
    ("DDPM", Ddpm, NONE),
    ("LMSDiscreteScheduler", Lms, NONE),
    ("LMS", Lms, karras(false)),
    ("LMS Karras", Lms, karras(true)),
    ("EulerDiscreteScheduler", Euler, NONE),
    ("Euler", Euler, karras(false)),
    ("EulerAncestralDiscreteScheduler", EulerAncestral, NONE),
    ("Euler a", EulerAncestral, NONE),
    ("HeunDiscreteScheduler", Heun, NONE),
    ("Heun", Heun, karras(false)),
    ("DPMSolverMultistepScheduler", DpmSolverMultistep, NONE),
    ("DPM++ 2M", DpmSolverMultistep, dpm("dpmsolver++", false)),
    (
        "DPM++ 2M Karras",
        DpmSolverMultistep,
        dpm("dpmsolver++", true),
    ),
    (
        "DPM++ 2M SDE",
        DpmSolverMultistep,
        dpm("sde-dpmsolver++", false),
    ),
    (
        "DPM++ 2M SDE Karras",
        DpmSolverMultistep,
        dpm("sde-dpmsolver++", true),
    ),
    ("UniPCMultistepScheduler", UniPc, NONE),
    ("UniPC", UniPc, NONE),
    ("LCMScheduler", Lcm, NONE),
    ("LCM", Lcm, NONE),
];

/// All names [`scheduler_from_name`] accepts.
pub fn known_names() -> Vec<&'static str> {
    NAMES.iter().map(|(name, _, _)| *name).collect()
}

/// The scheduler class a name stands for.
pub fn kind_of(name: &str) -> Result<SchedulerKind> {
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
            known: known_names().into_iter().map(str::to_string).collect(),
        })
}

/// Options a request may set on top of the config and the name.
#[derive(Debug, Clone, Copy, Default)]
pub struct SamplerOptions {
    /// DDIM's η (0 = deterministic DDIM); other schedulers ignore it, as diffusers does (a
    /// pipeline passes it to `step` rather than through the config).
    pub eta: f32,
    /// Karras σ spacing on or off; `None`: what the name implies, else the config. Turning it
    /// on for a class without the option ([`SchedulerKind::takes_karras_sigmas`]) is an error.
    pub karras_sigmas: Option<bool>,
}

impl SchedulerKind {
    /// Whether the class can space its σ schedule as Karras et al. (diffusers'
    /// `use_karras_sigmas`; its Euler-ancestral class has no such option).
    pub fn takes_karras_sigmas(self) -> bool {
        matches!(self, Lms | Euler | Heun | DpmSolverMultistep | UniPc)
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
    let (kind, implied) = lookup(name)?;
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
        Ddim => Box::new(DdimScheduler::new(&config)?.with_eta(options.eta)),
        Ddpm => Box::new(DdpmScheduler::new(&config)?),
        Lms => Box::new(LmsScheduler::new(&config)?),
        Euler => Box::new(EulerScheduler::new(&config)?),
        EulerAncestral => Box::new(EulerAncestralScheduler::new(&config)?),
        Heun => Box::new(HeunScheduler::new(&config)?),
        DpmSolverMultistep => Box::new(DpmSolverScheduler::new(&config)?),
        UniPc => Box::new(UniPcScheduler::new(&config)?),
        Lcm => Box::new(LcmScheduler::new(&config)?),
    })
}
