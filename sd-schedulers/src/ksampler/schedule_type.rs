//! A1111's schedule types (`modules/sd_schedulers.py`): how many σ between the model's σ_max
//! and σ_min, and where, for a given number of steps. Each schedule ends with σ = 0.
//!
//! Arithmetic as torch does it: σ_min and σ_max are Python floats (f64) read from the model's
//! f32 table; `linspace`, powers and exponentials run on f32 tensors.

use sd_core::{Error, Result};

use super::model_sigmas::ModelSigmas;
use crate::noise_schedule::torch_linspace_f32;

/// A schedule type of A1111's menu that SD 1.5 has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScheduleType {
    /// The sampler's own default: Karras for DPM++ 2M, DPM2, DPM2 a and DPM++ 2S a; the model's
    /// uniform discretisation for the others.
    Automatic,
    /// The model's training timesteps spaced uniformly in t from T − 1 to 0 (k-diffusion's
    /// `DiscreteSchedule.get_sigmas`).
    Uniform,
    /// Karras et al. (2022): uniform in σ^(1/ρ), ρ = 7.
    Karras,
    /// Uniform in ln σ.
    Exponential,
    /// ln σ a polynomial of the ramp, ρ = 1 (then the same as Exponential up to rounding).
    Polyexponential,
    /// `steps + 1` points uniform in t from t(σ_max) to t(σ_min), the last one dropped.
    SgmUniform,
}

/// (A1111's name, its label, other spellings A1111 accepts), in the menu's order.
const SCHEDULE_TYPES: &[(ScheduleType, &str, &str, &[&str])] = &[
    (ScheduleType::Automatic, "automatic", "Automatic", &[]),
    (ScheduleType::Uniform, "uniform", "Uniform", &[]),
    (ScheduleType::Karras, "karras", "Karras", &[]),
    (ScheduleType::Exponential, "exponential", "Exponential", &[]),
    (
        ScheduleType::Polyexponential,
        "polyexponential",
        "Polyexponential",
        &[],
    ),
    (
        ScheduleType::SgmUniform,
        "sgm_uniform",
        "SGM Uniform",
        &["SGMUniform"],
    ),
];

/// Karras et al.'s ρ, A1111's default for its Karras schedule.
const KARRAS_RHO: f64 = 7.0;
/// A1111's default ρ for Polyexponential.
const POLYEXPONENTIAL_RHO: f64 = 1.0;

impl ScheduleType {
    /// Every schedule type, in A1111's menu order.
    pub fn all() -> impl Iterator<Item = ScheduleType> {
        SCHEDULE_TYPES.iter().map(|&(kind, ..)| kind)
    }

    /// A1111's internal name (`karras`, `sgm_uniform`), what its API's `scheduler` field takes.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The label A1111 shows and writes as `Schedule type: …` (`Karras`, `SGM Uniform`).
    pub fn label(self) -> &'static str {
        self.entry().2
    }

    /// Other spellings A1111 accepts.
    pub fn aliases(self) -> &'static [&'static str] {
        self.entry().3
    }

    /// ρ of the schedule where it has one (A1111's `default_rho`).
    pub fn default_rho(self) -> Option<f64> {
        match self {
            ScheduleType::Karras => Some(KARRAS_RHO),
            ScheduleType::Polyexponential => Some(POLYEXPONENTIAL_RHO),
            _ => None,
        }
    }

    /// Whether the schedule reads the model's table (A1111's `need_inner_model`).
    pub fn needs_model(self) -> bool {
        matches!(self, ScheduleType::Uniform | ScheduleType::SgmUniform)
    }

    /// The schedule type named `text`: its name or label or an alias, case-insensitive.
    pub fn parse(text: &str) -> Result<ScheduleType> {
        let wanted = text.trim();
        SCHEDULE_TYPES
            .iter()
            .find(|(_, name, label, aliases)| {
                std::iter::once(name)
                    .chain([label])
                    .chain(aliases.iter())
                    .any(|known| known.eq_ignore_ascii_case(wanted))
            })
            .map(|&(kind, ..)| kind)
            .ok_or_else(|| {
                Error::invalid_argument(
                    "schedule type",
                    format!(
                        "`{wanted}` is not one of {}",
                        SCHEDULE_TYPES
                            .iter()
                            .map(|(_, _, label, _)| *label)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    fn entry(
        self,
    ) -> &'static (
        ScheduleType,
        &'static str,
        &'static str,
        &'static [&'static str],
    ) {
        SCHEDULE_TYPES
            .iter()
            .find(|(kind, ..)| *kind == self)
            .unwrap_or(&SCHEDULE_TYPES[0])
    }

    /// `steps` noise levels from σ_max down, then 0. `Automatic` must be resolved to a concrete
    /// type first; it means [`Uniform`](Self::Uniform) here.
    pub(crate) fn sigmas(self, model: &ModelSigmas, steps: usize) -> Vec<f32> {
        let sigma_min = f64::from(model.sigma_min());
        let sigma_max = f64::from(model.sigma_max());
        let mut sigmas: Vec<f32> = match self {
            ScheduleType::Automatic | ScheduleType::Uniform => {
                torch_linspace_f32(model.t_max(), 0.0, steps)
                    .into_iter()
                    .map(|t| model.t_to_sigma(t))
                    .collect()
            }
            ScheduleType::Karras => {
                let min_inv_rho = sigma_min.powf(1.0 / KARRAS_RHO);
                let max_inv_rho = sigma_max.powf(1.0 / KARRAS_RHO);
                let span = (min_inv_rho - max_inv_rho) as f32;
                torch_linspace_f32(0.0, 1.0, steps)
                    .into_iter()
                    .map(|ramp| (max_inv_rho as f32 + ramp * span).powf(KARRAS_RHO as f32))
                    .collect()
            }
            ScheduleType::Exponential => {
                torch_linspace_f32(sigma_max.ln() as f32, sigma_min.ln() as f32, steps)
                    .into_iter()
                    .map(f32::exp)
                    .collect()
            }
            ScheduleType::Polyexponential => {
                let span = (sigma_max.ln() - sigma_min.ln()) as f32;
                let offset = sigma_min.ln() as f32;
                torch_linspace_f32(1.0, 0.0, steps)
                    .into_iter()
                    .map(|ramp| (ramp.powf(POLYEXPONENTIAL_RHO as f32) * span + offset).exp())
                    .collect()
            }
            ScheduleType::SgmUniform => {
                let start = model.sigma_to_t(sigma_max as f32);
                let end = model.sigma_to_t(sigma_min as f32);
                let mut ts = torch_linspace_f32(start, end, steps + 1);
                ts.pop();
                ts.into_iter().map(|t| model.t_to_sigma(t)).collect()
            }
        };
        sigmas.push(0.0);
        sigmas
    }
}

impl std::fmt::Display for ScheduleType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
