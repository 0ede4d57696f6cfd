//! A1111's schedule types (`modules/sd_schedulers.py`): how many σ between the model's σ_max
//! and σ_min, and where, for a given number of steps. Each schedule ends with σ = 0.
//!
//! Arithmetic as torch does it: σ_min and σ_max are Python floats (f64) read from the model's
//! f32 table; `linspace`, powers and exponentials run on f32 tensors.

use sd_core::{Error, Result};

use super::beta_quantile::beta_quantile;
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
    /// Uniform in arctan σ from σ_max to σ_min, `steps + 1` values ending at σ_min, no 0
    /// (A1111's `kl_optimal`).
    KlOptimal,
    /// NVIDIA's Align Your Steps σ for SD 1.5 (11 values), log-linearly interpolated to
    /// `steps` values.
    AlignYourSteps,
    /// Every (T/steps)-th training σ from the top, T/steps as a real number.
    Simple,
    /// `steps` points uniform in t from t(σ_max) to t(σ_min).
    Normal,
    /// Every ⌊T/steps⌋-th training σ from timestep 1 up (can give more than `steps` σ).
    Ddim,
    /// σ_min + (σ_max − σ_min)·q, q the Beta(0.6, 0.6) quantiles of `1 − linspace(0, 1, steps)`.
    Beta,
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
    (ScheduleType::KlOptimal, "kl_optimal", "KL Optimal", &[]),
    (
        ScheduleType::AlignYourSteps,
        "align_your_steps",
        "Align Your Steps",
        &[],
    ),
    (ScheduleType::Simple, "simple", "Simple", &[]),
    (ScheduleType::Normal, "normal", "Normal", &[]),
    (ScheduleType::Ddim, "ddim", "DDIM", &[]),
    (ScheduleType::Beta, "beta", "Beta", &[]),
];

/// Karras et al.'s ρ, A1111's default for its Karras schedule.
const KARRAS_RHO: f64 = 7.0;
/// A1111's default ρ for Polyexponential.
const POLYEXPONENTIAL_RHO: f64 = 1.0;
/// Align Your Steps' 11 σ for SD 1.5, as A1111 lists them.
const ALIGN_YOUR_STEPS_SD15: [f64; 11] = [
    14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029,
];
/// The Beta distribution's (α, β) of A1111's "Beta" schedule type (its options
/// `beta_dist_alpha` and `beta_dist_beta` at their defaults).
pub const BETA_SCHEDULE_ALPHA_BETA: (f64, f64) = (0.6, 0.6);

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
        matches!(
            self,
            ScheduleType::Uniform
                | ScheduleType::SgmUniform
                | ScheduleType::Simple
                | ScheduleType::Normal
                | ScheduleType::Ddim
                | ScheduleType::Beta
        )
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

    /// `steps` noise levels from σ_max down, then 0 (KL Optimal: `steps + 1` ending at σ_min;
    /// DDIM: ⌈T/⌊T/steps⌋⌉ levels). `Automatic` must be resolved to a concrete type first; it
    /// means [`Uniform`](Self::Uniform) here.
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
            ScheduleType::SgmUniform | ScheduleType::Normal => {
                let start = model.sigma_to_t(sigma_max as f32);
                let end = model.sigma_to_t(sigma_min as f32);
                let mut ts = if self == ScheduleType::SgmUniform {
                    let mut ts = torch_linspace_f32(start, end, steps + 1);
                    ts.pop();
                    ts
                } else {
                    torch_linspace_f32(start, end, steps)
                };
                ts.iter_mut().for_each(|t| *t = model.t_to_sigma(*t));
                ts
            }
            // Ends at σ_min itself: no 0 is appended.
            ScheduleType::KlOptimal => return kl_optimal(sigma_min, sigma_max, steps),
            ScheduleType::AlignYourSteps => align_your_steps(steps),
            ScheduleType::Simple => {
                let table = model.sigmas();
                let stride = table.len() as f64 / steps as f64;
                (0..steps)
                    .map(|x| table[table.len() - 1 - (x as f64 * stride) as usize])
                    .collect()
            }
            ScheduleType::Ddim => {
                let table = model.sigmas();
                let stride = (table.len() / steps).max(1);
                (1..table.len())
                    .step_by(stride)
                    .rev()
                    .map(|x| table[x])
                    .collect()
            }
            ScheduleType::Beta => {
                let (alpha, beta) = BETA_SCHEDULE_ALPHA_BETA;
                numpy_linspace(0.0, 1.0, steps)
                    .into_iter()
                    .map(|x| {
                        let q = beta_quantile(1.0 - x, alpha, beta);
                        (sigma_min + q * (sigma_max - sigma_min)) as f32
                    })
                    .collect()
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

/// A1111's `kl_optimal`: tan of `steps + 1` points from arctan σ_max to arctan σ_min, in f32.
fn kl_optimal(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f32> {
    let (alpha_min, alpha_max) = ((sigma_min as f32).atan(), (sigma_max as f32).atan());
    (0..=steps)
        .map(|i| {
            let w = i as f32 / steps as f32;
            (w * alpha_min + (1.0 - w) * alpha_max).tan()
        })
        .collect()
}

/// Align Your Steps for SD 1.5: the 11 published σ as they are for 11 steps, else ln σ
/// interpolated linearly (numpy's `interp`, f64) at `steps` evenly spaced points.
fn align_your_steps(steps: usize) -> Vec<f32> {
    let published = ALIGN_YOUR_STEPS_SD15;
    if steps == published.len() {
        return published.iter().map(|&s| s as f32).collect();
    }
    // Ascending σ, as the interpolation wants increasing abscissae.
    let log_sigmas: Vec<f64> = published.iter().rev().map(|s| s.ln()).collect();
    let xs = numpy_linspace(0.0, 1.0, published.len());
    let mut sigmas: Vec<f32> = numpy_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|x| numpy_interp(x, &xs, &log_sigmas).exp() as f32)
        .collect();
    sigmas.reverse();
    sigmas
}

/// `numpy.linspace(start, end, n)` in f64: `start + i·step`, the last value `end` exactly.
fn numpy_linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    let mut values: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    values[n - 1] = end;
    values
}

/// `numpy.interp(x, xs, ys)` for increasing `xs` and x within them.
fn numpy_interp(x: f64, xs: &[f64], ys: &[f64]) -> f64 {
    let last = xs.len() - 1;
    if x >= xs[last] {
        return ys[last];
    }
    if x <= xs[0] {
        return ys[0];
    }
    let j = xs.iter().rposition(|&xj| xj <= x).unwrap_or(0);
    let slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]);
    slope * (x - xs[j]) + ys[j]
}
