//! DPM-Solver++ SDE (k-diffusion's `sample_dpmpp_sde` with η = 1), diffusers'
//! `DPMSolverSDEScheduler`.
//!
//! Two model evaluations per step from σᵢ to σᵢ₊₁, in times t = −ln σ: at σᵢ, then at the
//! midpoint σ_midᵢ = e^(−(tᵢ + tᵢ₊₁)/2); each evaluation is followed by a DPM-Solver++(1) step
//! split into a deterministic part and Brownian noise (`ksampler/sde.rs`, `SdeStep`). The step
//! to σ = 0 is one Euler evaluation. [`timesteps`](Scheduler::timesteps) interleaves the
//! midpoints' timesteps: t₀, t_mid₀, t₁, t_mid₁, …, t_{n−1}; diffusers keeps them in f64, and
//! finds a midpoint's timestep from the f64 σ before they are stored as f32.
//!
//! The noise is torchsde's Brownian tree ([`BrownianNoise`]) over [σ_{n−1}, σ₀] for the whole
//! sample the scheduler steps, seeded with the config's `noise_sampler_seed`. Where the config
//! leaves that unset, diffusers draws a seed from torch's global generator, which a pipeline
//! never seeds, so its image is not reproducible; here the seed is then the generator's own seed
//! (the image's seed), which makes the run reproducible and equal to diffusers run with
//! `noise_sampler_seed` = that seed.

use sd_core::{Error, HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::brownian::BrownianNoise;
use crate::config::{ClassDefaults, SchedulerConfig, TimestepSpacing};
use crate::elementwise::{check_steps, map2};
use crate::k_diffusion;
use crate::kdpm2::{add_noise_at, interleave_midpoints, noise_levels};
use crate::ksampler::SdeStep;
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas::{self, SigmaSpacing};
use crate::spacing;

const DEFAULTS: ClassDefaults = ClassDefaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "linear",
    timestep_spacing: "linspace",
};

/// diffusers' `DPMSolverSDEScheduler` step has an `s_noise` argument the pipelines never pass.
const S_NOISE: f32 = 1.0;
/// The stochastic steps' η: diffusers' formula is k-diffusion's at η = 1.
const ETA: f32 = 1.0;

#[derive(Debug, Clone)]
pub struct DpmSolverSdeScheduler {
    /// σ per evaluation (σ₀, σ_mid₀, σ₁, …, σ_{n−1}), then 0.
    schedule: SigmaTimesteps,
    spacing: Option<SigmaSpacing>,
    /// `noise_sampler_seed`; `None`: the generator's seed.
    noise_sampler_seed: Option<u64>,
    /// The inference σ₀ … σ_{n−1}, then 0.
    sigmas: Vec<f32>,
    /// diffusers' per-evaluation `sigmas` (σᵢ at both evaluations ending a step), for `add_noise`.
    noise_levels: Vec<f32>,
    /// The run's Brownian noise, made at its first stochastic step.
    noise: Option<BrownianNoise>,
    /// The sample a step started from, kept between its two evaluations.
    start: Option<HostTensor>,
}

impl DpmSolverSdeScheduler {
    /// From a `scheduler_config.json`, with `DPMSolverSDEScheduler`'s defaults for missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule_any_spacing(&DEFAULTS)?;
        config.require_noise_prediction(resolved.prediction_type)?;
        Ok(DpmSolverSdeScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::KDiffusion),
            spacing: config.sigma_spacing()?,
            noise_sampler_seed: config.noise_sampler_seed,
            sigmas: Vec::new(),
            noise_levels: Vec::new(),
            noise: None,
            start: None,
        })
    }

    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0.
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// The step's timesteps and σ in f64, as diffusers' `set_timesteps` has them before storing
    /// σ as f32: spaced timesteps (linspace in f64 here, unlike the Euler family's f32), σ
    /// interpolated at them, optionally respaced with their timesteps found back from σ.
    fn steps_f64(&self, steps: usize) -> (Vec<f64>, Vec<f64>) {
        let config = &self.schedule.config;
        let train = config.num_train_timesteps;
        let timesteps: Vec<f64> = match config.timestep_spacing {
            TimestepSpacing::Linspace => spacing::numpy_linspace(0.0, (train - 1) as f64, steps)
                .into_iter()
                .rev()
                .collect(),
            spacing_kind => spacing::discrete(spacing_kind, train, steps, config.steps_offset)
                .into_iter()
                .map(|t| t as f64)
                .collect(),
        };
        let table = self.schedule.training_sigmas();
        let sigmas = sigmas::interp(&timesteps, &table);
        match self.spacing {
            None => (timesteps, sigmas),
            Some(spacing) => {
                let sigmas = spacing.respace(&sigmas, steps);
                let log_table = sigmas::log_sigmas(&table);
                let timesteps = sigmas
                    .iter()
                    .map(|&s| sigmas::sigma_to_t(s, &log_table))
                    .collect();
                (timesteps, sigmas)
            }
        }
    }

    /// The run's Brownian noise, made on first use over [smallest positive σ, largest σ] for
    /// samples like `sample`.
    fn noise(
        &mut self,
        sample: &HostTensor,
        generator: &dyn NormalSource,
    ) -> Result<&mut BrownianNoise> {
        let noise = match self.noise.take() {
            Some(noise) => noise,
            None => {
                let positive = self.sigmas.iter().copied().filter(|&s| s > 0.0);
                let sigma_min = positive.fold(f32::INFINITY, f32::min);
                let sigma_max = self.sigmas.iter().copied().fold(0.0, f32::max);
                let seed = self
                    .noise_sampler_seed
                    .unwrap_or_else(|| generator.initial_seed());
                BrownianNoise::new(sigma_min, sigma_max, sample.shape(), seed)?
            }
        };
        Ok(self.noise.insert(noise))
    }
}

/// The timestep of the log-midpoint between each two consecutive σ, from the f64 σ
/// (diffusers' `_second_order_timesteps`).
fn midpoint_timesteps(sigmas: &[f64], log_table: &[f32]) -> Vec<f64> {
    sigmas
        .windows(2)
        .map(|pair| {
            let (t, t_next) = (-pair[0].ln(), -pair[1].ln());
            let t_mid = t + (t_next - t) * 0.5;
            sigmas::sigma_to_t((-t_mid).exp(), log_table)
        })
        .collect()
}

impl Scheduler for DpmSolverSdeScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(steps, self.schedule.config.num_train_timesteps)?;
        let (timesteps, sigmas_f64) = self.steps_f64(steps);
        let log_table = self.schedule.log_training_sigmas();
        let midpoints = midpoint_timesteps(&sigmas_f64, &log_table);
        let mut sigmas: Vec<f32> = sigmas_f64.iter().map(|&s| s as f32).collect();
        sigmas.push(0.0);

        let (evaluation_timesteps, evaluation_sigmas) = interleave_midpoints(
            &timesteps,
            &sigmas,
            steps,
            midpoints
                .iter()
                .zip(sigmas.windows(2))
                .map(|(&t, pair)| (t, SdeStep::new(pair[0], pair[1]).midpoint_sigma())),
        );
        self.noise_levels = noise_levels(&sigmas, steps);
        self.schedule
            .set(steps, evaluation_timesteps, evaluation_sigmas);
        self.sigmas = sigmas;
        self.noise = None;
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
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        self.schedule.check_step(index, model_output, sample)?;
        // Evaluation 2i is step i's first (at σᵢ), 2i + 1 its second (at σ_midᵢ).
        let i = index / 2;
        let (sigma, sigma_next) = (self.sigmas[i], self.sigmas[i + 1]);
        let prediction = self.schedule.config.prediction_type;
        let step = SdeStep::new(sigma, sigma_next);
        let second = index % 2 == 1;
        match (second, self.start.take()) {
            (true, None) => Err(Error::invalid_argument(
                "index",
                "steps taken out of order: the second evaluation of a step came before its first",
            )),
            (false, _) if sigma_next == 0.0 => {
                let original =
                    k_diffusion::predict_original(prediction, sigma, sample, model_output)?;
                let dt = sigma_next - sigma;
                map2("DPMSolverSDE step", sample, &original, |x, x0| {
                    x + (x - x0) / sigma * dt
                })
            }
            (false, _) => {
                let original =
                    k_diffusion::predict_original(prediction, sigma, sample, model_output)?;
                self.start = Some(sample.clone());
                let noise = self.noise(sample, generator)?;
                step.to_midpoint(sample, &original, ETA, S_NOISE, noise)
            }
            (true, Some(start)) => {
                let midpoint = step.midpoint_sigma();
                let original =
                    k_diffusion::predict_original(prediction, midpoint, sample, model_output)?;
                let noise = self.noise(&start, generator)?;
                // diffusers' second half uses the second estimate alone (k-diffusion's r = ½).
                step.to_end(&start, &original, &original, ETA, S_NOISE, noise)
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
