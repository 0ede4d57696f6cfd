//! DPM-Solver-2 with ancestral noise, k-diffusion's `sample_dpm_2_ancestral`, diffusers'
//! `KDPM2AncestralDiscreteScheduler`.
//!
//! Each step from σᵢ splits the move to σᵢ₊₁ as Euler ancestral does, into a deterministic part
//! down to σ_down and fresh noise of size σ_up (σ_down² + σ_up² = σᵢ₊₁²), and takes the
//! deterministic part as DPM-Solver-2: an Euler step to the log-midpoint √(σᵢ·σ_down), then the
//! whole move from σᵢ with the slope measured there, then the noise.
//! [`timesteps`](Scheduler::timesteps): t₀, t_mid₀, t₁, t_mid₁, …, t_{n−1}; the last step (to
//! σ = 0) is a plain Euler step without noise.

use sd_core::{HostTensor, NormalSource, Result, ScheduleState, Scheduler};

use crate::config::SchedulerConfig;
use crate::elementwise::map2;
use crate::k_diffusion;
use crate::kdpm2::{DEFAULTS, Kdpm2Base, add_noise_at, euler_move, interleave_midpoints};
use crate::sigma_timesteps::{Parameterisation, SigmaTimesteps};
use crate::sigmas;

/// One step's noise levels.
#[derive(Debug, Clone, Copy)]
struct AncestralStep {
    sigma: f32,
    /// √(σ·σ_down); 0 on the last step.
    midpoint: f32,
    down: f32,
    up: f32,
}

#[derive(Debug, Clone)]
pub struct Kdpm2AncestralScheduler {
    /// σ per evaluation (σ₀, σ_mid₀, σ₁, σ_mid₁, …, σ_{n−1}), then 0.
    schedule: SigmaTimesteps,
    karras: bool,
    steps: Vec<AncestralStep>,
    /// diffusers' per-evaluation `sigmas`, for `add_noise`.
    noise_levels: Vec<f32>,
    /// The sample a step started from, kept between its two evaluations.
    start: Option<HostTensor>,
}

impl Kdpm2AncestralScheduler {
    /// The noise level σ of each entry of [`timesteps`](Scheduler::timesteps), then the final
    /// σ = 0.
    pub fn sigmas(&self) -> &[f32] {
        self.schedule.sigmas()
    }

    /// From a `scheduler_config.json`, with `KDPM2AncestralDiscreteScheduler`'s defaults for
    /// missing keys.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let resolved = config.noise_schedule(&DEFAULTS)?;
        config.require_noise_prediction(resolved.prediction_type)?;
        Ok(Kdpm2AncestralScheduler {
            schedule: SigmaTimesteps::new(resolved, Parameterisation::KDiffusion),
            karras: config.use_karras_sigmas.unwrap_or(false),
            steps: Vec::new(),
            noise_levels: Vec::new(),
            start: None,
        })
    }
}

/// σ_up, σ_down of a move from `sigma` to `next`, in torch's f32 order of operations.
fn ancestral_split(sigma: f32, next: f32) -> (f32, f32) {
    let (from2, to2) = (sigma * sigma, next * next);
    let up = (to2 * (from2 - to2) / from2).sqrt();
    (up, (to2 - up * up).sqrt())
}

impl Scheduler for Kdpm2AncestralScheduler {
    fn schedule(&self) -> &dyn ScheduleState {
        &self.schedule
    }

    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let base = Kdpm2Base::new(&self.schedule, steps, self.karras)?;
        let sigmas = &base.sigmas;
        self.steps = (0..steps)
            .map(|i| {
                let (up, down) = ancestral_split(sigmas[i], sigmas[i + 1]);
                // diffusers zeroes the last step's midpoint: its move to σ = 0 is plain Euler.
                let midpoint = if i + 1 == steps {
                    0.0
                } else {
                    sigmas::log_midpoint(sigmas[i], down)
                };
                AncestralStep {
                    sigma: sigmas[i],
                    midpoint,
                    down,
                    up,
                }
            })
            .collect();
        let log_table = self.schedule.log_training_sigmas();
        let (timesteps, evaluation_sigmas) = interleave_midpoints(
            &base.timesteps,
            sigmas,
            steps,
            self.steps.iter().map(|step| {
                (
                    base.midpoint_timestep(step.midpoint, &log_table),
                    step.midpoint,
                )
            }),
        );
        self.noise_levels = base.noise_levels();
        self.schedule.set(steps, timesteps, evaluation_sigmas);
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
        let AncestralStep {
            sigma,
            midpoint,
            down,
            up,
        } = self.steps[index / 2];
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
                let moved = euler_move(&start, sample, &original, midpoint, down - sigma)?;
                let noise = generator.randn(model_output.shape());
                map2("KDPM2 ancestral step", &moved, &noise, |x, n| x + n * up)
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
