//! Diffusion schedulers (samplers) for Stable Diffusion, step for step identical to diffusers
//! 0.42: the same timesteps, the same σ, the same f32 arithmetic, and the same draws from a
//! torch-compatible generator, so a seeded run reproduces a seeded diffusers run.
//!
//! Each scheduler is one file implementing [`sd_core::Scheduler`], built from a
//! `scheduler_config.json` ([`SchedulerConfig`]) with its diffusers class's defaults for missing
//! keys. Pick one by diffusers class name or A1111 sampler name with [`scheduler_from_name`]:
//!
//! ```
//! use sd_schedulers::{scheduler_from_name, SchedulerConfig};
//!
//! let mut sampler = scheduler_from_name("DPM++ 2M Karras", &SchedulerConfig::sd15())?;
//! sampler.set_timesteps(20)?;
//! assert_eq!(sampler.timesteps().len(), 20);
//! # Ok::<(), sd_core::Error>(())
//! ```
//!
//! | file | diffusers class | A1111 name |
//! |---|---|---|
//! | `pndm.rs` | `PNDMScheduler` (PLMS) | PLMS |
//! | `ddim.rs` | `DDIMScheduler` | DDIM |
//! | `ddpm.rs` | `DDPMScheduler` | — |
//! | `lms.rs` | `LMSDiscreteScheduler` | LMS, LMS Karras |
//! | `euler.rs` | `EulerDiscreteScheduler` | Euler |
//! | `euler_ancestral.rs` | `EulerAncestralDiscreteScheduler` | Euler a |
//! | `heun.rs` | `HeunDiscreteScheduler` | Heun |
//! | `dpm_solver.rs` | `DPMSolverMultistepScheduler` | DPM++ 2M (Karras), DPM++ 2M SDE (Karras) |
//! | `unipc.rs` | `UniPCMultistepScheduler` | UniPC |
//! | `lcm.rs` | `LCMScheduler` | LCM |
//!
//! Each scheduler keeps its run's schedule in an `AlphaTimesteps` (`alpha_timesteps.rs`: DDIM,
//! DDPM, PNDM, LCM) or a `SigmaTimesteps` (`sigma_timesteps.rs`: the σ-samplers), the
//! [`sd_core::ScheduleState`] its [`Scheduler::schedule`] returns; the read-only `Scheduler`
//! methods (timesteps, initial noise σ, model input scaling, `add_noise`) are the trait's
//! default methods over it, and each file adds `set_timesteps` and `step`.
//!
//! Shared math lives once: `noise_schedule.rs` (β → ᾱ → σ tables), `spacing.rs` (timestep
//! spacing), `sigmas.rs` (interpolation, Karras spacing, σ → t, λ), `alpha_family.rs` and
//! `k_diffusion.rs` (the per-family tensor formulas), `elementwise.rs` (f32 element-wise maps and
//! argument checks).

pub mod a1111;
mod alpha_family;
mod alpha_timesteps;
mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
mod elementwise;
mod euler;
mod euler_ancestral;
mod heun;
mod k_diffusion;
mod ksampler;
mod lcm;
mod lms;
mod names;
mod noise_schedule;
mod pndm;
mod sigma_timesteps;
mod sigmas;
mod spacing;
mod unipc;

pub use a1111::{a1111_menu, infotext_names, resolve_a1111};
pub use config::{
    BetaSchedule, PredictionType, SD15_SCHEDULER_CONFIG, SchedulerConfig, TimestepSpacing,
};
pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use dpm_solver::DpmSolverScheduler;
pub use euler::EulerScheduler;
pub use euler_ancestral::EulerAncestralScheduler;
pub use heun::HeunScheduler;
pub use ksampler::{KDiffusionSampler, KSamplerKind, KSamplerSetup, ScheduleType};
pub use lcm::LcmScheduler;
pub use lms::LmsScheduler;
pub use names::{
    SamplerOptions, SchedulerKind, diffusers_names, kind_of, known_names, scheduler_from_name,
    scheduler_from_name_with,
};
pub use pndm::PndmScheduler;
pub use sd_core::Scheduler;
pub use unipc::UniPcScheduler;
