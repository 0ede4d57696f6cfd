//! AUTOMATIC1111's sampler menu (1.10, `modules/sd_samplers_kdiffusion.py`,
//! `modules/sd_schedulers.py`, `modules/sd_samplers.py`): its sampler names with their aliases,
//! default schedule types and discard rule, its schedule types, and how it reads a
//! (sampler, scheduler) pair, including the older combined names ("DPM++ 2M Karras").
//!
//! A1111's "Automatic" schedule type means the sampler's own default: Karras for DPM++ 2M,
//! DPM++ SDE, DPM++ 2S a, DPM2 and DPM2 a; Exponential for DPM++ 2M SDE, DPM++ 2M SDE Heun and
//! DPM++ 3M SDE (which, like DPM2 and DPM2 a, also drops the next-to-last σ);
//! the model's uniform discretisation for Euler, Euler a, LMS and Heun.

use sd_core::pipeline::SamplerSettings;
use sd_core::{Error, Result};

use crate::SchedulerKind;
use crate::ksampler::{KSamplerKind, ScheduleType};

/// One k-diffusion sampler of A1111's menu.
#[derive(Debug, Clone, Copy)]
pub struct A1111Sampler {
    /// The name A1111 shows and writes as `Sampler: …`.
    pub name: &'static str,
    /// Other names A1111 accepts for it.
    pub aliases: &'static [&'static str],
    pub kind: KSamplerKind,
    /// The schedule type "Automatic" stands for (`None`: the model's uniform discretisation).
    pub default_schedule: Option<ScheduleType>,
    /// A1111 computes one σ more and drops the next-to-last.
    pub discard_penultimate_sigma: bool,
}

const fn sampler(
    name: &'static str,
    aliases: &'static [&'static str],
    kind: KSamplerKind,
    default_schedule: Option<ScheduleType>,
    discard_penultimate_sigma: bool,
) -> A1111Sampler {
    A1111Sampler {
        name,
        aliases,
        kind,
        default_schedule,
        discard_penultimate_sigma,
    }
}

/// A1111's k-diffusion samplers that are reproduced here, in its menu order.
const K_SAMPLERS: &[A1111Sampler] = &[
    sampler(
        "DPM++ 2M",
        &["k_dpmpp_2m"],
        KSamplerKind::DpmPp2m,
        Some(ScheduleType::Karras),
        false,
    ),
    sampler(
        "DPM++ SDE",
        &["k_dpmpp_sde"],
        KSamplerKind::DpmPpSde,
        Some(ScheduleType::Karras),
        false,
    ),
    sampler(
        "DPM++ 2M SDE",
        &["k_dpmpp_2m_sde"],
        KSamplerKind::DpmPp2mSde,
        Some(ScheduleType::Exponential),
        false,
    ),
    sampler(
        "DPM++ 2M SDE Heun",
        &["k_dpmpp_2m_sde_heun"],
        KSamplerKind::DpmPp2mSdeHeun,
        Some(ScheduleType::Exponential),
        false,
    ),
    sampler(
        "DPM++ 2S a",
        &["k_dpmpp_2s_a"],
        KSamplerKind::DpmPp2sAncestral,
        Some(ScheduleType::Karras),
        false,
    ),
    sampler(
        "DPM++ 3M SDE",
        &["k_dpmpp_3m_sde"],
        KSamplerKind::DpmPp3mSde,
        Some(ScheduleType::Exponential),
        true,
    ),
    sampler(
        "Euler a",
        &["k_euler_a", "k_euler_ancestral"],
        KSamplerKind::EulerAncestral,
        None,
        false,
    ),
    sampler("Euler", &["k_euler"], KSamplerKind::Euler, None, false),
    sampler("LMS", &["k_lms"], KSamplerKind::Lms, None, false),
    sampler("Heun", &["k_heun"], KSamplerKind::Heun, None, false),
    sampler(
        "DPM2",
        &["k_dpm_2"],
        KSamplerKind::Dpm2,
        Some(ScheduleType::Karras),
        true,
    ),
    sampler(
        "DPM2 a",
        &["k_dpm_2_a"],
        KSamplerKind::Dpm2Ancestral,
        Some(ScheduleType::Karras),
        true,
    ),
    sampler(
        "DPM fast",
        &["k_dpm_fast"],
        KSamplerKind::DpmFast,
        None,
        false,
    ),
    sampler(
        "DPM adaptive",
        &["k_dpm_ad"],
        KSamplerKind::DpmAdaptive,
        None,
        false,
    ),
];

/// A1111's samplers outside k-diffusion's sampling functions that are reproduced here: its
/// timestep samplers DDIM, DDIM CFG++, PLMS (`a1111_timesteps.rs`) and UniPC (`a1111_unipc.rs`), which take
/// no schedule type, and its LCM (`ksampler/lcm.rs`), which takes one: (name, aliases).
pub const A1111_OWN: &[(&str, &[&str])] = &[
    ("DDIM", &["ddim"]),
    ("DDIM CFG++", &["ddim_cfgpp"]),
    ("PLMS", &["plms"]),
    ("UniPC", &["unipc"]),
    ("LCM", &["k_lcm"]),
];

/// The A1111 names diffusers classes are written as in an infotext (`Sampler: …`): the closest
/// A1111 sampler (PNDM with skipped PRK steps is A1111's PLMS), not an exact equivalent.
const DIFFUSERS_INFOTEXT_NAMES: &[(&str, &str)] = &[
    ("DDIMScheduler", "DDIM"),
    ("PNDMScheduler", "PLMS"),
    ("UniPCMultistepScheduler", "UniPC"),
    ("LCMScheduler", "LCM"),
];

impl A1111Sampler {
    /// The schedule type that runs when `chosen` is asked for (Automatic: the default).
    pub fn effective_schedule(&self, chosen: ScheduleType) -> ScheduleType {
        match chosen {
            ScheduleType::Automatic => self.default_schedule.unwrap_or(ScheduleType::Uniform),
            other => other,
        }
    }

    /// What A1111 writes as `Schedule type: …` for `chosen`: the label of the schedule that
    /// ran, "Automatic" for a sampler without a default that ran on Automatic.
    pub fn schedule_label(&self, chosen: ScheduleType) -> &'static str {
        match (chosen, self.default_schedule) {
            (ScheduleType::Automatic, None) => ScheduleType::Automatic.label(),
            _ => self.effective_schedule(chosen).label(),
        }
    }

    fn answers_to(&self, name: &str) -> bool {
        std::iter::once(&self.name)
            .chain(self.aliases)
            .any(|known| known.eq_ignore_ascii_case(name))
    }
}

/// Every k-diffusion sampler of A1111's menu reproduced here.
pub fn a1111_samplers() -> &'static [A1111Sampler] {
    K_SAMPLERS
}

/// One entry of A1111's sampler list, as its API's `GET /sdapi/v1/samplers` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuSampler {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// The default schedule type's name (`karras`), A1111's `options.scheduler`.
    pub default_scheduler: Option<&'static str>,
}

/// One entry of A1111's schedule types, as its API's `GET /sdapi/v1/schedulers` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct MenuScheduleType {
    pub name: &'static str,
    pub label: &'static str,
    pub aliases: &'static [&'static str],
    pub default_rho: Option<f64>,
    pub need_inner_model: bool,
}

/// A1111's sampler names and schedule types that requests may use, with their aliases.
pub fn a1111_menu() -> (Vec<MenuSampler>, Vec<MenuScheduleType>) {
    let samplers = K_SAMPLERS
        .iter()
        .map(|s| MenuSampler {
            name: s.name,
            aliases: s.aliases,
            default_scheduler: s.default_schedule.map(ScheduleType::name),
        })
        .chain(A1111_OWN.iter().map(|&(name, aliases)| MenuSampler {
            name,
            aliases,
            default_scheduler: None,
        }))
        .collect();
    let schedule_types = ScheduleType::all()
        .map(|kind| MenuScheduleType {
            name: kind.name(),
            label: kind.label(),
            aliases: kind.aliases(),
            default_rho: kind.default_rho(),
            need_inner_model: kind.needs_model(),
        })
        .collect();
    (samplers, schedule_types)
}

/// The k-diffusion sampler `name` stands for, and the schedule type a combined name carries
/// ("DPM++ 2M Karras" → DPM++ 2M, Karras; "Euler a" → Euler a, none). As A1111 reads it: a
/// trailing schedule label (or alias) after a space is split off first.
pub fn split_a1111_name(name: &str) -> Option<(&'static A1111Sampler, Option<ScheduleType>)> {
    let name = name.trim();
    if let Some(found) = K_SAMPLERS.iter().find(|s| s.answers_to(name)) {
        return Some((found, None));
    }
    for kind in ScheduleType::all() {
        for suffix in std::iter::once(kind.label()).chain(kind.aliases().iter().copied()) {
            let Some(base) = strip_suffix_ignore_case(name, suffix) else {
                continue;
            };
            let Some(base) = base.strip_suffix(' ') else {
                continue;
            };
            if let Some(found) = K_SAMPLERS.iter().find(|s| s.answers_to(base.trim_end())) {
                return Some((found, Some(kind)));
            }
        }
    }
    None
}

fn strip_suffix_ignore_case<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(suffix.len())?;
    let (head, tail) = (text.get(..cut)?, text.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

/// A request's sampler from A1111's two fields, `sampler_name` and `scheduler` (its API's and
/// its UI's): a combined name's schedule wins over the field, as in A1111; an absent, empty or
/// "Automatic" scheduler leaves the sampler's default. A1111's own DDIM, PLMS and UniPC (which
/// take no schedule type), LCM, and diffusers class names pass through unchanged.
pub fn resolve_a1111(sampler_name: &str, scheduler: Option<&str>) -> Result<SamplerSettings> {
    let field = match scheduler.map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => Some(ScheduleType::parse(text)?),
        None => None,
    };
    if let Some((found, suffix)) = split_a1111_name(sampler_name) {
        let chosen = suffix.or(field).unwrap_or(ScheduleType::Automatic);
        return Ok(SamplerSettings {
            name: Some(found.name.to_string()),
            schedule_type: (chosen != ScheduleType::Automatic).then(|| chosen.label().to_string()),
            ..SamplerSettings::default()
        });
    }
    // Not a k-diffusion name: one scheduler builds it or it is unknown.
    let kind = crate::names::kind_of(sampler_name)?;
    if kind == SchedulerKind::A1111Lcm {
        let chosen = field.unwrap_or(ScheduleType::Automatic);
        return Ok(SamplerSettings {
            name: Some("LCM".to_string()),
            schedule_type: (chosen != ScheduleType::Automatic).then(|| chosen.label().to_string()),
            ..SamplerSettings::default()
        });
    }
    if let Some(kind) = field.filter(|&k| k != ScheduleType::Automatic) {
        return Err(Error::invalid_argument(
            "scheduler",
            format!(
                "the {} sampler takes no schedule type (got {})",
                sampler_name.trim(),
                kind.label()
            ),
        ));
    }
    Ok(SamplerSettings {
        name: Some(sampler_name.trim().to_string()),
        ..SamplerSettings::default()
    })
}

/// How A1111 writes a sampler in its infotext: `Sampler: …` and, for its k-diffusion samplers,
/// `Schedule type: …` (the label of the schedule that ran, "Automatic" for a sampler without a
/// default of its own; LCM too). A combined name is split ("DPM++ 2M Karras" → DPM++ 2M, Karras);
/// A1111's own DDIM and PLMS are written as such; the diffusers classes DDIM, PNDM (which runs
/// with skipped PRK steps, SD 1.5's config: A1111's `PLMS`), UniPC and LCM get the A1111 name
/// closest to them; other diffusers names are written as given.
pub fn infotext_names(
    name: &str,
    schedule_type: Option<ScheduleType>,
) -> Result<(String, Option<&'static str>)> {
    if let Some((found, suffix)) = split_a1111_name(name) {
        let chosen = suffix.or(schedule_type).unwrap_or(ScheduleType::Automatic);
        return Ok((found.name.to_string(), Some(found.schedule_label(chosen))));
    }
    match crate::names::kind_of(name)? {
        SchedulerKind::A1111Timesteps(kind) => Ok((kind.a1111_name().to_string(), None)),
        SchedulerKind::A1111UniPc => Ok(("UniPC".to_string(), None)),
        SchedulerKind::A1111Lcm => {
            let chosen = schedule_type.unwrap_or(ScheduleType::Automatic);
            Ok(("LCM".to_string(), Some(chosen.label())))
        }
        kind => {
            let a1111 = DIFFUSERS_INFOTEXT_NAMES
                .iter()
                .find(|(class, _)| crate::names::kind_of(class).ok() == Some(kind))
                .map(|(_, a1111)| *a1111);
            Ok((a1111.unwrap_or(name.trim()).to_string(), None))
        }
    }
}
