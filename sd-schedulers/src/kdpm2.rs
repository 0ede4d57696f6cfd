//! DPM-Solver-2 (Lu et al. 2022) in k-diffusion's form (`sample_dpm_2`), diffusers'
//! `KDPM2DiscreteScheduler`.
//!
//! Two model evaluations per step from σᵢ to σᵢ₊₁: an Euler step to the log-midpoint
//! σ_mid = √(σᵢ·σᵢ₊₁), then the whole step from σᵢ with the slope measured at σ_mid.
//! [`timesteps`](Scheduler::timesteps) interleaves the midpoints' timesteps:
//! t₀, t_mid₁, t₁, t_mid₂, t₂, …, t_{n−1}; the last step (to σ = 0) is a plain Euler step.

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::{ClassDefaults, SchedulerConfig};
use crate::elementwise::{check_index, map2};
use crate::k_diffusion;
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas::{self, SigmaBounds, SigmaSchedule};

/// Both KDPM2 classes' defaults.
pub(crate) const DEFAULTS: ClassDefaults = ClassDefaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "linear",
    timestep_spacing: "linspace",
};

#[derive(Debug, Clone)]
pub struct Kdpm2Scheduler {
    /// σ per evaluation (σ₀, σ_mid₁, σ₁, …, σ_{n−1}), then 0.
    schedule: SigmaTimesteps,
    karras: bool,
    /// The inference σ₀ … σ_{n−1}, 0 and the midpoints σ_midᵢ between σᵢ₋₁ and σᵢ (index 0 unused).
    sigmas: Vec<f32>,
    midpoints: Vec<f32>,
    /// diffusers' per-evaluation `sigmas` (σᵢ at both evaluations ending a step), for `add_noise`.
    noise_levels: Vec<f32>,
    /// The sample a step started from, kept between its two evaluations.
    start: Option<HostTensor>,
}

/// What both KDPM2 classes build their schedules from.
pub(crate) struct Kdpm2Base {
    /// Timesteps of σ₀ … σ_{n−1}, f64 (Karras: rounded, kept f64 as diffusers keeps them).
    pub timesteps: Vec<f64>,
    /// σ₀ … σ_{n−1}, then 0.
    pub sigmas: Vec<f32>,
    pub karras: bool,
}

impl Kdpm2Base {
    /// The k-diffusion σ schedule (Karras timesteps rounded, as both KDPM2 classes round them).
    pub fn new(schedule: &SigmaTimesteps, steps: usize, karras: bool) -> Result<Self> {
        let SigmaSchedule { timesteps, sigmas } =
            schedule.k_diffusion(steps, karras.then_some(SigmaBounds::default()))?;
        let timesteps = timesteps
            .into_iter()
            .map(|t| {
                let t = f64::from(t);
                if karras { t.round_ties_even() } else { t }
            })
            .collect();
        Ok(Kdpm2Base {
            timesteps,
            sigmas,
            karras,
        })
    }

    /// The timestep of a midpoint σ, in the precision diffusers ends up with: f32 unless the
    /// timesteps are Karras' (f64 there).
    pub fn midpoint_timestep(&self, sigma: f32, log_table: &[f32]) -> f64 {
        let t = sigmas::sigma_to_t_f32(sigma, log_table);
        if self.karras { t } else { f64::from(t as f32) }
    }

    /// diffusers' per-evaluation `sigmas` ([`noise_levels`]).
    pub fn noise_levels(&self) -> Vec<f32> {
        noise_levels(&self.sigmas, self.timesteps.len())
    }
}

/// diffusers' per-evaluation `sigmas` of the two-evaluation classes (KDPM2, DPMSolverSDE) for
/// `steps` steps over `sigmas` = σ₀ … σ_{n−1}, 0: σ₀, σ₁, σ₁, σ₂, σ₂, …, 2n − 1 entries.
pub(crate) fn noise_levels(sigmas: &[f32], steps: usize) -> Vec<f32> {
    (0..2 * steps - 1).map(|j| sigmas[j.div_ceil(2)]).collect()
}

/// The evaluations of the two-evaluation classes (KDPM2, KDPM2 a, DPMSolverSDE) as diffusers
/// lists them: σ₀, then for each later step i the previous step's midpoint and σᵢ, then the
/// final σ = 0. `timesteps`/`sigmas` are the steps' own; `midpoints` yields the (timestep, σ)
/// of the midpoints of steps 0 … n − 2. Returns the evaluation timesteps and σ.
pub(crate) fn interleave_midpoints(
    timesteps: &[f64],
    sigmas: &[f32],
    steps: usize,
    midpoints: impl Iterator<Item = (f64, f32)>,
) -> (Vec<f64>, Vec<f32>) {
    let mut evaluation_timesteps = vec![timesteps[0]];
    let mut evaluation_sigmas = vec![sigmas[0]];
    for (i, (midpoint_timestep, midpoint)) in (1..steps).zip(midpoints) {
        evaluation_timesteps.extend([midpoint_timestep, timesteps[i]]);
        evaluation_sigmas.extend([midpoint, sigmas[i]]);
    }
    evaluation_sigmas.push(0.0);
    (evaluation_timesteps, evaluation_sigmas)
}

/// Noise to diffusers' σ of evaluation `index` in `noise_levels` ([`Kdpm2Base::noise_levels`]:
/// σᵢ for both evaluations ending at σᵢ, where the evaluation σ of a midpoint differs).
pub(crate) fn add_noise_at(
    noise_levels: &[f32],
    original: &HostTensor,
    noise: &HostTensor,
    index: usize,
) -> Result<HostTensor> {
    check_index(index, noise_levels.len())?;
    k_diffusion::add_noise(noise_levels[index], original, noise)
}

impl Kdpm2Scheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0.
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `KDPM2DiscreteScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        config.require_noise_prediction(resolved.prediction_type)?;
        Ok(Kdpm2Scheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::KDiffusion),
            karras: config.use_karras_sigmas.unwrap_or(false),
            sigmas: Vec::new(),
            midpoints: Vec::new(),
            noise_levels: Vec::new(),
            start: None,
        })
    }
}

/// `sample + (x − x̂₀)/σ_slope · dt`, the Euler move both evaluations of a KDPM2 step make.
pub(crate) fn euler_move(
    from: &HostTensor,
    sample: &HostTensor,
    original: &HostTensor,
    sigma_slope: f32,
    dt: f32,
) -> Result<HostTensor> {
    let derivative = map2("KDPM2 step", sample, original, |x, x0| {
        (x - x0) / sigma_slope
    })?;
    map2("KDPM2 step", from, &derivative, |x, d| x + d * dt)
}

impl Scheduler for Kdpm2Scheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let base = Kdpm2Base::new(&self.schedule, steps, self.karras)?;
        let sigmas = &base.sigmas;
        // σ_midᵢ between σᵢ₋₁ and σᵢ; the last (σ_n = 0) is 0.
        let midpoints: Vec<f32> = (0..sigmas.len())
            .map(|i| {
                if i == 0 {
                    f32::NAN
                } else {
                    sigmas::log_midpoint(sigmas[i], sigmas[i - 1])
                }
            })
            .collect();
        let log_table = self.schedule.log_training_sigmas();
        let (timesteps, evaluation_sigmas) = interleave_midpoints(
            &base.timesteps,
            sigmas,
            steps,
            midpoints[1..]
                .iter()
                .map(|&m| (base.midpoint_timestep(m, &log_table), m)),
        );
        self.noise_levels = base.noise_levels();
        self.schedule.set(steps, timesteps, evaluation_sigmas);
        self.sigmas = base.sigmas;
        self.midpoints = midpoints;
        self.start = None;
        Ok(())
    }

    fn order(&self) -> usize {
        2
    }

    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        _generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        self.schedule.check_step(index, model_output, sample)?;
        // Evaluation 2i is step i's first (at σᵢ), 2i + 1 its second (at σ_midᵢ₊₁).
        let i = index / 2;
        let (sigma, midpoint, sigma_next) =
            (self.sigmas[i], self.midpoints[i + 1], self.sigmas[i + 1]);
        let prediction = self.schedule.config.prediction_type;
        match self.start.take() {
            None => {
                let original =
                    k_diffusion::predict_original(prediction, sigma, sample, model_output)?;
                self.start = Some(sample.clone());
                euler_move(sample, sample, &original, sigma, midpoint - sigma)
            }
            Some(start) => {
                let original =
                    k_diffusion::predict_original(prediction, midpoint, sample, model_output)?;
                euler_move(&start, sample, &original, midpoint, sigma_next - sigma)
            }
        }
    }

    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        add_noise_at(&self.noise_levels, original, noise, index)
    }
}
