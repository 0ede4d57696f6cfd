//! Diffusion samplers for Stable Diffusion in two vocabularies, each exact to its source:
//!
//! - **A1111's k-diffusion samplers** (`Euler a`, `Euler`, `LMS`, `Heun`, `DPM2`, `DPM2 a`,
//!   `DPM++ 2S a`, `DPM++ 2M`, `DPM++ SDE`, `DPM++ 2M SDE`, `DPM++ 2M SDE Heun`, `DPM++ 3M SDE`,
//!   `DPM fast` and `DPM adaptive` ([`A1111DpmSolverSampler`], `ksampler/dpm_solver.rs`), with A1111's schedule types Automatic, Uniform, Karras,
//!   Exponential, Polyexponential, SGM Uniform, KL Optimal, Align Your Steps, Simple, Normal,
//!   DDIM and Beta): [`KDiffusionSampler`] runs k-diffusion's sampling functions on the σ
//!   schedule AUTOMATIC1111 1.10 builds, as A1111 drives them (`ksampler/`, names in
//!   [`a1111`]); A1111's `LCM` ([`A1111LcmSampler`], `ksampler/lcm.rs`) and its own timestep
//!   samplers `DDIM`, `DDIM CFG++`, `PLMS` ([`A1111TimestepSampler`], `a1111_timesteps.rs`) and `UniPC`
//!   ([`A1111UniPcSampler`], `a1111_unipc.rs`) likewise.
//! - **diffusers' scheduler classes**, step for step identical to diffusers 0.42: the same
//!   timesteps, the same σ, the same f32 arithmetic, and the same draws from a torch-compatible
//!   generator, so a seeded run reproduces a seeded diffusers run.
//!
//! Pick one by name with [`scheduler_from_name`] (a combined A1111 name such as
//! `"DPM++ 2M Karras"` carries its schedule type; [`SamplerOptions::schedule_type`] sets one):
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
//! An HTTP front end speaking A1111's API lists the menu with [`a1111_menu`] and turns a
//! request's `sampler_name` + `scheduler` into settings with [`resolve_a1111`].
//!
//! | file | diffusers class | short names |
//! |---|---|---|
//! | `pndm.rs` | `PNDMScheduler` (PLMS) | PNDM |
//! | `ddim.rs` | `DDIMScheduler` | — |
//! | `ddpm.rs` | `DDPMScheduler` | DDPM |
//! | `lms.rs` | `LMSDiscreteScheduler` | — |
//! | `euler.rs` | `EulerDiscreteScheduler` | — |
//! | `euler_ancestral.rs` | `EulerAncestralDiscreteScheduler` | — |
//! | `heun.rs` | `HeunDiscreteScheduler` | — |
//! | `dpm_solver.rs` | `DPMSolverMultistepScheduler` | — |
//! | `unipc.rs` | `UniPCMultistepScheduler` | — |
//! | `lcm.rs` | `LCMScheduler` | — |
//! | `dpm_solver_singlestep.rs` | `DPMSolverSinglestepScheduler` | — |
//! | `kdpm2.rs` | `KDPM2DiscreteScheduler` | — |
//! | `kdpm2_ancestral.rs` | `KDPM2AncestralDiscreteScheduler` | — |
//! | `deis.rs` | `DEISMultistepScheduler` | DEIS |
//! | `tcd.rs` | `TCDScheduler` | TCD |
//! | `dpm_solver_sde.rs` | `DPMSolverSDEScheduler` | — |
//!
//! A diffusers class reads its options from the config; [`SchedulerConfig::with_overrides`]
//! changes keys of it (`sd generate --scheduler-config algorithm_type=sde-dpmsolver++`).
//!
//! Each diffusers scheduler keeps its run's schedule in an `AlphaTimesteps`
//! (`alpha_timesteps.rs`: DDIM, DDPM, PNDM, LCM, TCD) or a `SigmaTimesteps` (`sigma_timesteps.rs`: the
//! σ-samplers), the [`sd_core::ScheduleState`] its [`Scheduler::schedule`] returns; the read-only
//! `Scheduler` methods (timesteps, initial noise σ, model input scaling, `add_noise`) are the
//! trait's default methods over it, and each file adds `set_timesteps` and `step`.
//!
//! Shared math lives once: `noise_schedule.rs` (β → ᾱ → σ tables), `spacing.rs` (timestep
//! spacing), `sigmas.rs` (interpolation, Karras spacing, σ → t, λ), `alpha_family.rs` and
//! `k_diffusion.rs` (the per-family tensor formulas), `elementwise.rs` (f32 element-wise maps and
//! argument checks).

pub mod a1111;
mod a1111_timesteps;
mod a1111_unipc;
mod alpha_family;
mod alpha_timesteps;
mod brownian;
mod config;
mod ddim;
mod ddpm;
mod deis;
mod dpm_solver;
mod dpm_solver_sde;
mod dpm_solver_singlestep;
mod elementwise;
mod euler;
mod euler_ancestral;
mod heun;
mod k_diffusion;
mod kdpm2;
mod kdpm2_ancestral;
mod ksampler;
mod lcm;
mod lms;
mod names;
mod noise_schedule;
mod pndm;
mod sigma_timesteps;
mod sigmas;
mod spacing;
mod tcd;
mod unipc;

pub use a1111::{a1111_menu, infotext_names, resolve_a1111};
pub use a1111_timesteps::{A1111TimestepSampler, TimestepSamplerKind};
pub use a1111_unipc::A1111UniPcSampler;
pub use brownian::{BrownianNoise, BrownianTree};
pub use config::{
    BetaSchedule, PredictionType, SD15_SCHEDULER_CONFIG, SchedulerConfig, TimestepSpacing,
    parse_override,
};
pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use deis::DeisScheduler;
pub use dpm_solver::DpmSolverScheduler;
pub use dpm_solver_sde::DpmSolverSdeScheduler;
pub use dpm_solver_singlestep::DpmSolverSinglestepScheduler;
pub use euler::EulerScheduler;
pub use euler_ancestral::EulerAncestralScheduler;
pub use heun::HeunScheduler;
pub use kdpm2::Kdpm2Scheduler;
pub use kdpm2_ancestral::Kdpm2AncestralScheduler;
pub use ksampler::{
    A1111DpmSolverSampler, A1111LcmSampler, BETA_SCHEDULE_ALPHA_BETA, DpmSolverKind,
    KDiffusionSampler, KSamplerKind, KSamplerSetup, ScheduleType,
};
pub use lcm::LcmScheduler;
pub use lms::LmsScheduler;
pub use names::{
    SamplerOptions, SchedulerKind, diffusers_names, kind_of, known_names, scheduler_from_name,
    scheduler_from_name_with,
};
pub use pndm::PndmScheduler;
pub use sd_core::Scheduler;
pub use tcd::TcdScheduler;
pub use unipc::UniPcScheduler;
