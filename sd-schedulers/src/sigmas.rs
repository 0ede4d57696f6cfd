//! Noise levels σ for the samplers that work in σ rather than in ᾱ: interpolation between
//! training timesteps, Karras et al.'s spacing, σ → timestep, and σ → (α_t, σ_t, λ).
//!
//! Mixed precision follows diffusers: the σ table is f32 (a torch tensor), interpolation and
//! Karras spacing run in f64 (numpy), and the schedule is stored as f32.

use crate::config::{NoiseScheduleConfig, TimestepSpacing};
use crate::ksampler::beta_quantile;
use crate::noise_schedule::NoiseSchedule;
use crate::spacing;

/// Karras et al. (2022) use ρ = 7 for their σ spacing.
const KARRAS_RHO: f64 = 7.0;

/// Inference timesteps with their noise levels; `sigmas` has one more entry, the final σ = 0.
#[derive(Debug, Clone, Default)]
pub(crate) struct SigmaSchedule {
    pub timesteps: Vec<f32>,
    pub sigmas: Vec<f32>,
}

/// Optional bounds replacing the table's σ_min / σ_max in Karras spacing (Euler, UniPC read them
/// from the config; the other classes ignore those keys).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SigmaBounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The σ schedule of the k-diffusion samplers (Euler, Euler a, LMS, Heun): σ interpolated at
/// the (possibly fractional) spaced timesteps, or Karras-spaced σ with their timesteps found
/// back by [`sigma_to_t`].
pub(crate) fn k_diffusion(
    noise: &NoiseSchedule,
    config: &NoiseScheduleConfig,
    steps: usize,
    karras: Option<SigmaBounds>,
) -> SigmaSchedule {
    let table = noise.sigmas();
    let mut timesteps = spacing::continuous(
        config.timestep_spacing,
        config.num_train_timesteps,
        steps,
        config.steps_offset,
    );
    let at: Vec<f64> = timesteps.iter().map(|&t| f64::from(t)).collect();
    let mut sigmas = interp(&at, &table);
    if let Some(bounds) = karras {
        sigmas = karras_sigmas(&sigmas, steps, bounds);
        let log_table = log_sigmas(&table);
        timesteps = sigmas
            .iter()
            .map(|&s| sigma_to_t(s, &log_table) as f32)
            .collect();
    }
    sigmas.push(0.0);
    SigmaSchedule {
        timesteps,
        sigmas: sigmas.into_iter().map(|s| s as f32).collect(),
    }
}

/// `init_noise_sigma` of the k-diffusion samplers: σ_max, or √(σ_max² + 1) for leading spacing
/// (diffusers' rule for schedules that never reach t = T−1).
pub(crate) fn k_diffusion_init_noise_sigma(sigmas: &[f32], spacing: TimestepSpacing) -> f32 {
    let max = sigmas.iter().copied().fold(0.0f32, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
    }
}

/// `numpy.interp(x, arange(len(table)), table)` in f64.
pub(crate) fn interp(x: &[f64], table: &[f32]) -> Vec<f64> {
    let last = table.len() - 1;
    x.iter()
        .map(|&x| {
            if x <= 0.0 {
                f64::from(table[0])
            } else if x >= last as f64 {
                f64::from(table[last])
            } else {
                let j = x.floor() as usize;
                let (lo, hi) = (f64::from(table[j]), f64::from(table[j + 1]));
                if x == j as f64 {
                    lo
                } else {
                    (hi - lo) * (x - j as f64) + lo
                }
            }
        })
        .collect()
}

/// Karras et al.'s spacing: `steps` values from σ_max down to σ_min, uniform in σ^(1/ρ).
/// `interpolated` are the σ the spaced timesteps gave (first = largest, last = smallest).
pub(crate) fn karras_sigmas(interpolated: &[f64], steps: usize, bounds: SigmaBounds) -> Vec<f64> {
    let sigma_min = bounds.min.unwrap_or(interpolated[interpolated.len() - 1]);
    let sigma_max = bounds.max.unwrap_or(interpolated[0]);
    let min_inv_rho = sigma_min.powf(1.0 / KARRAS_RHO);
    let max_inv_rho = sigma_max.powf(1.0 / KARRAS_RHO);
    spacing::numpy_linspace(0.0, 1.0, steps)
        .iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(KARRAS_RHO))
        .collect()
}

/// How a class may respace the interpolated σ of its timesteps (diffusers' `use_karras_sigmas`,
/// `use_exponential_sigmas`, `use_beta_sigmas`), between their first (σ_max) and last (σ_min).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigmaSpacing {
    /// Uniform in σ^(1/ρ) ([`karras_sigmas`]).
    Karras,
    /// Uniform in ln σ.
    Exponential,
    /// At the quantiles of Beta(0.6, 0.6) between σ_min and σ_max (Lee et al. 2024).
    Beta,
}

/// The Beta distribution's (α, β) diffusers' `use_beta_sigmas` spaces σ with.
const BETA_SIGMAS_ALPHA_BETA: (f64, f64) = (0.6, 0.6);

impl SigmaSpacing {
    /// `steps` σ from σ_max down to σ_min, the bounds taken from `interpolated` (first = largest,
    /// last = smallest), in f64 as numpy computes them.
    pub fn respace(self, interpolated: &[f64], steps: usize) -> Vec<f64> {
        let sigma_min = interpolated[interpolated.len() - 1];
        let sigma_max = interpolated[0];
        match self {
            SigmaSpacing::Karras => karras_sigmas(interpolated, steps, SigmaBounds::default()),
            SigmaSpacing::Exponential => {
                spacing::numpy_linspace(sigma_max.ln(), sigma_min.ln(), steps)
                    .into_iter()
                    .map(f64::exp)
                    .collect()
            }
            SigmaSpacing::Beta => {
                let (alpha, beta) = BETA_SIGMAS_ALPHA_BETA;
                spacing::numpy_linspace(0.0, 1.0, steps)
                    .into_iter()
                    .map(|x| {
                        let quantile = beta_quantile(1.0 - x, alpha, beta);
                        sigma_min + quantile * (sigma_max - sigma_min)
                    })
                    .collect()
            }
        }
    }
}

/// ln σ of the training table, in f32 as numpy takes it of an f32 array.
pub(crate) fn log_sigmas(table: &[f32]) -> Vec<f32> {
    table.iter().map(|s| s.ln()).collect()
}

/// The fractional training timestep whose σ is `sigma`: linear interpolation in ln σ between
/// the two neighbouring table entries (diffusers' `_sigma_to_t`, mixed f32/f64 as there).
///
/// numpy takes ln of the f32 table with its own SIMD logarithm, which is not correctly rounded;
/// ours is, so unrounded timesteps (Karras σ for Euler, LMS, Heun) can differ from diffusers'
/// by up to ~1e-4. The rounded ones of DPM-Solver and UniPC come out identical.
pub(crate) fn sigma_to_t(sigma: f64, log_table: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last table entry at or below ln σ (0 if none), kept below the last entry so there is
    // a right neighbour.
    let low_idx = log_table
        .iter()
        .rposition(|&l| log_sigma - f64::from(l) >= 0.0)
        .unwrap_or(0)
        .min(log_table.len() - 2);
    let (low, high) = (log_table[low_idx], log_table[low_idx + 1]);
    let w = ((f64::from(low) - log_sigma) / f64::from(low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * (low_idx + 1) as f64
}

/// [`sigma_to_t`] for an f32 σ, as numpy runs diffusers' `_sigma_to_t` on one: ln σ and the
/// interpolation weight in f32, the weighted sum of the two indices in f64 (numpy promotes the
/// f32 weight against the i64 index). Used for the KDPM2 classes' midpoint timesteps.
pub(crate) fn sigma_to_t_f32(sigma: f32, log_table: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let low_idx = log_table
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(log_table.len() - 2);
    let (low, high) = (log_table[low_idx], log_table[low_idx + 1]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    f64::from(1.0 - w) * low_idx as f64 + f64::from(w) * (low_idx + 1) as f64
}

/// The geometric mean of two noise levels as torch computes `a.log().lerp(b.log(), 0.5).exp()`
/// in f32 (torch's lerp at weight ½ is `end − (end − start)·½`): 0 when `a` is 0, NaN when only
/// `b` is (the KDPM2 classes overwrite or never read those entries).
pub(crate) fn log_midpoint(a: f32, b: f32) -> f32 {
    let (start, end) = (a.ln(), b.ln());
    (end - (end - start) * 0.5).exp()
}

/// The VP-SDE view of σ: α_t = 1/√(σ² + 1), σ_t = σ·α_t (f32, as torch computes them).
pub(crate) fn alpha_sigma_t(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// Half log-SNR λ = ln α_t − ln σ_t (+∞ at σ = 0).
pub(crate) fn lambda(alpha_t: f32, sigma_t: f32) -> f32 {
    alpha_t.ln() - sigma_t.ln()
}

/// Where the multistep solvers' σ schedule ends, after the last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalSigma {
    /// σ = 0: the last step lands on the clean sample (diffusers' `final_sigmas_type = "zero"`).
    Zero,
    /// The smallest training σ, σ(t = 0) (`final_sigmas_type = "sigma_min"`; DEIS always).
    TrainingMin,
    /// The last evaluation's σ again, so the last step does not move σ (DEIS with Karras σ).
    RepeatLast,
}

/// The schedule of the multistep solvers (DPM-Solver, UniPC, DEIS, DPM-Solver singlestep):
/// integer timesteps (`steps + 1` points, t = 0 dropped) with σ from the table, or Karras-spaced σ
/// with their nearest timesteps (`round_timesteps`; DPM-Solver truncates instead for the cosine
/// schedule), then the final σ.
pub(crate) fn multistep(
    noise: &NoiseSchedule,
    config: &NoiseScheduleConfig,
    steps: usize,
    karras: Option<SigmaBounds>,
    round_timesteps: bool,
    final_sigma: FinalSigma,
) -> (Vec<i64>, Vec<f32>) {
    let table = noise.sigmas();
    let timesteps = spacing::multistep(
        config.timestep_spacing,
        config.num_train_timesteps,
        steps,
        config.steps_offset,
    );
    let (timesteps, mut sigmas) = match karras {
        Some(bounds) => {
            // Karras spacing over the whole table, σ_max = σ(T−1) down to σ_min = σ(0).
            let full_range = [f64::from(table[table.len() - 1]), f64::from(table[0])];
            let sigmas = karras_sigmas(&full_range, steps, bounds);
            let log_table = log_sigmas(&table);
            let timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_table);
                    (if round_timesteps {
                        t.round_ties_even()
                    } else {
                        t.trunc()
                    }) as i64
                })
                .collect();
            (timesteps, sigmas)
        }
        None => {
            let sigmas = timesteps
                .iter()
                .map(|&t| f64::from(table[t.clamp(0, table.len() as i64 - 1) as usize]))
                .collect();
            (timesteps, sigmas)
        }
    };
    sigmas.push(match final_sigma {
        FinalSigma::Zero => 0.0,
        FinalSigma::TrainingMin => f64::from(table[0]),
        FinalSigma::RepeatLast => sigmas[sigmas.len() - 1],
    });
    (timesteps, sigmas.into_iter().map(|s| s as f32).collect())
}
