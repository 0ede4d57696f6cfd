//! The model's own noise levels as AUTOMATIC1111 hands them to k-diffusion: σ_t of each of the
//! training timesteps, and the maps between a continuous timestep t and σ that k-diffusion's
//! `DiscreteSchedule` defines (linear interpolation in ln σ).
//!
//! Precision follows that path. The LDM model computes ᾱ in f64 (numpy) and stores it as f32;
//! k-diffusion derives σ = √((1 − ᾱ)/ᾱ), ln σ and every t ↔ σ map from it in f32 torch
//! arithmetic. (diffusers computes its ᾱ in f32 from the start, so its table can differ from
//! this one in the last bit.)

use crate::config::BetaSchedule;
use crate::noise_schedule::NoiseSchedule;

/// σ of each training timestep, ascending (`sigmas[0]` = σ_min), with their logarithms.
#[derive(Debug, Clone)]
pub(crate) struct ModelSigmas {
    sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
}

impl ModelSigmas {
    /// The table of a model trained with `schedule` over `num_train_timesteps` steps.
    pub fn new(schedule: &BetaSchedule, num_train_timesteps: usize) -> Self {
        Self::from_alphas_cumprod(&model_alphas_cumprod(schedule, num_train_timesteps))
    }

    /// The table of σ = √((1 − ᾱ)/ᾱ) for each ᾱ, in f32.
    pub fn from_alphas_cumprod(alphas_cumprod: &[f32]) -> Self {
        let sigmas: Vec<f32> = alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        ModelSigmas { sigmas, log_sigmas }
    }

    /// σ of every training timestep, ascending.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The smallest trained σ (timestep 0).
    pub fn sigma_min(&self) -> f32 {
        self.sigmas[0]
    }

    /// The largest trained σ (the last timestep).
    pub fn sigma_max(&self) -> f32 {
        self.sigmas[self.sigmas.len() - 1]
    }

    /// The last timestep index, T − 1.
    pub fn t_max(&self) -> f32 {
        (self.sigmas.len() - 1) as f32
    }

    /// σ at continuous timestep `t`: ln σ interpolated linearly between the neighbouring
    /// training timesteps (`DiscreteSchedule.t_to_sigma`).
    pub fn t_to_sigma(&self, t: f32) -> f32 {
        let low = t.floor();
        let w = t - t.trunc();
        let (lo, hi) = (low as usize, t.ceil() as usize);
        let log_sigma = (1.0 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi];
        log_sigma.exp()
    }

    /// The continuous timestep of noise level `sigma`, the inverse of
    /// [`t_to_sigma`](Self::t_to_sigma) (`DiscreteSchedule.sigma_to_t`, unquantised as A1111
    /// runs it by default), clamped to [0, T − 1].
    pub fn sigma_to_t(&self, sigma: f32) -> f32 {
        let log_sigma = sigma.ln();
        // The last table entry at or below ln σ (0 when none is), kept below the last entry so
        // there is a right neighbour.
        let low_idx = self
            .log_sigmas
            .iter()
            .rposition(|&l| log_sigma - l >= 0.0)
            .unwrap_or(0)
            .min(self.log_sigmas.len() - 2);
        let (low, high) = (self.log_sigmas[low_idx], self.log_sigmas[low_idx + 1]);
        let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
        (1.0 - w) * low_idx as f32 + w * (low_idx + 1) as f32
    }
}

/// ᾱ of each training timestep as the LDM model A1111 loads holds it (its `alphas_cumprod`,
/// f32).
pub(crate) fn model_alphas_cumprod(
    schedule: &BetaSchedule,
    num_train_timesteps: usize,
) -> Vec<f32> {
    match schedule {
        // The LDM's own "linear" schedule is diffusers' scaled_linear: linear in √β.
        BetaSchedule::ScaledLinear { start, end } => ldm_alphas_cumprod(
            torch_linspace_f64(start.sqrt(), end.sqrt(), num_train_timesteps)
                .into_iter()
                .map(|b| b * b),
        ),
        BetaSchedule::Linear { start, end } => {
            ldm_alphas_cumprod(torch_linspace_f64(*start, *end, num_train_timesteps))
        }
        // No LDM model of SD 1.x uses these; take diffusers' f32 table.
        BetaSchedule::SquaredCosCapV2 | BetaSchedule::Trained(_) => {
            NoiseSchedule::new(schedule, num_train_timesteps).alphas_cumprod
        }
    }
}

/// ᾱ as the LDM model computes it: the cumulative product of 1 − β in f64, stored as f32.
fn ldm_alphas_cumprod(betas: impl IntoIterator<Item = f64>) -> Vec<f32> {
    let mut product = 1.0f64;
    betas
        .into_iter()
        .map(|beta| {
            product *= 1.0 - beta;
            product as f32
        })
        .collect()
}

/// `torch.linspace(start, end, n, dtype=float64)`: the first half forwards from `start`, the
/// second half backwards from `end`.
fn torch_linspace_f64(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                start + step * i as f64
            } else {
                end - step * (n - 1 - i) as f64
            }
        })
        .collect()
}
