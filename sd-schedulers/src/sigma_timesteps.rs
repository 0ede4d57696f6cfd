//! The state and bookkeeping the σ-scheduled samplers (Euler, Euler a, LMS, Heun, DPM-Solver,
//! UniPC) share: the training noise schedule, the inference timesteps with their σ, and, as their
//! [`ScheduleState`], the `Scheduler` methods that only read them, in the k-diffusion
//! parameterisation x = x₀ + σ·ε (Euler, Euler a, LMS, Heun) or the variance-preserving one
//! x = α_t·x₀ + σ_t·ε (the multistep solvers).

use sd_core::{HostTensor, Result, ScheduleState};

use crate::config::{NoiseScheduleConfig, PredictionType};
use crate::elementwise::{check_index, check_step, check_steps, map2};
use crate::k_diffusion;
use crate::noise_schedule::NoiseSchedule;
use crate::sigmas::{self, FinalSigma, SigmaBounds, SigmaSchedule};

/// How a noisy sample relates to the clean one at noise level σ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parameterisation {
    /// x = x₀ + σ·ε; the model sees x/√(σ²+1).
    KDiffusion,
    /// x = α_t·x₀ + σ_t·ε with α_t = 1/√(σ²+1), σ_t = σ·α_t; the model sees x as it is.
    VariancePreserving,
}

#[derive(Debug, Clone)]
pub(crate) struct SigmaTimesteps {
    pub config: NoiseScheduleConfig,
    noise: NoiseSchedule,
    parameterisation: Parameterisation,
    steps: usize,
    timesteps: Vec<f64>,
    /// σ per evaluation, then the final σ = 0.
    sigmas: Vec<f32>,
}

impl SigmaTimesteps {
    /// No inference timesteps yet.
    pub fn new(config: NoiseScheduleConfig, parameterisation: Parameterisation) -> Self {
        SigmaTimesteps {
            noise: NoiseSchedule::new(&config.beta_schedule, config.num_train_timesteps),
            config,
            parameterisation,
            steps: 0,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        }
    }

    /// The k-diffusion σ schedule for `steps` inference steps ([`sigmas::k_diffusion`]).
    pub fn k_diffusion(&self, steps: usize, karras: Option<SigmaBounds>) -> Result<SigmaSchedule> {
        check_steps(steps, self.config.num_train_timesteps)?;
        Ok(sigmas::k_diffusion(
            &self.noise,
            &self.config,
            steps,
            karras,
        ))
    }

    /// Start a run of `steps` inference steps on the k-diffusion σ schedule, one evaluation per
    /// timestep.
    pub fn set_k_diffusion(&mut self, steps: usize, karras: Option<SigmaBounds>) -> Result<()> {
        let SigmaSchedule { timesteps, sigmas } = self.k_diffusion(steps, karras)?;
        self.set(
            steps,
            timesteps.into_iter().map(f64::from).collect(),
            sigmas,
        );
        Ok(())
    }

    /// Start a run of `steps` inference steps on the multistep solvers' schedule
    /// ([`sigmas::multistep`]).
    pub fn set_multistep(
        &mut self,
        steps: usize,
        karras: Option<SigmaBounds>,
        round_timesteps: bool,
        final_sigma: FinalSigma,
    ) -> Result<()> {
        check_steps(steps, self.config.num_train_timesteps)?;
        let (timesteps, sigmas) = sigmas::multistep(
            &self.noise,
            &self.config,
            steps,
            karras,
            round_timesteps,
            final_sigma,
        );
        self.set(
            steps,
            timesteps.into_iter().map(|t| t as f64).collect(),
            sigmas,
        );
        Ok(())
    }

    /// Start a run of `steps` inference steps evaluated at `timesteps` with noise levels
    /// `sigmas` (one more entry: the final σ).
    pub fn set(&mut self, steps: usize, timesteps: Vec<f64>, sigmas: Vec<f32>) {
        self.steps = steps;
        self.timesteps = timesteps;
        self.sigmas = sigmas;
    }

    /// σ of the training table, one per training timestep (f32, as torch computes them).
    pub fn training_sigmas(&self) -> Vec<f32> {
        self.noise.sigmas()
    }

    /// ln σ of the training table (diffusers' `log_sigmas`), for mapping σ back to timesteps.
    pub fn log_training_sigmas(&self) -> Vec<f32> {
        sigmas::log_sigmas(&self.training_sigmas())
    }

    /// σ of each evaluation, then the final σ (diffusers' `sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// σ of evaluation `index`, or the final σ for `index` = number of evaluations.
    pub fn sigma(&self, index: usize) -> f32 {
        self.sigmas[index]
    }

    /// Variance-preserving: (α_t, σ_t, λ) at position `i` of the σ schedule.
    pub fn vp_coordinates(&self, i: usize) -> (f32, f32, f32) {
        let (alpha, sigma) = sigmas::alpha_sigma_t(self.sigmas[i]);
        (alpha, sigma, sigmas::lambda(alpha, sigma))
    }

    /// Variance-preserving: the data prediction x̂₀ at position `index` from the model output,
    /// as diffusers' multistep solvers convert it (`op` names the sampler in shape errors).
    pub fn data_prediction(
        &self,
        op: &'static str,
        index: usize,
        sample: &HostTensor,
        model_output: &HostTensor,
    ) -> Result<HostTensor> {
        let (alpha, sigma, _) = self.vp_coordinates(index);
        match self.config.prediction_type {
            PredictionType::Epsilon => {
                map2(op, sample, model_output, |x, e| (x - sigma * e) / alpha)
            }
            PredictionType::VPrediction => {
                map2(op, sample, model_output, |x, v| alpha * x - sigma * v)
            }
            PredictionType::Sample => Ok(model_output.clone()),
        }
    }

    /// `index` names an evaluation and the two tensors have one shape.
    pub fn check_step(
        &self,
        index: usize,
        model_output: &HostTensor,
        sample: &HostTensor,
    ) -> Result<()> {
        check_step(index, self.timesteps.len(), model_output, sample)
    }
}

impl ScheduleState for SigmaTimesteps {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn steps(&self) -> usize {
        self.steps
    }

    /// The standard deviation of the initial noise: k-diffusion starts at the largest σ
    /// ([`sigmas::k_diffusion_init_noise_sigma`]), variance-preserving at 1.
    fn init_noise_sigma(&self) -> f32 {
        match self.parameterisation {
            Parameterisation::KDiffusion => {
                sigmas::k_diffusion_init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
            }
            Parameterisation::VariancePreserving => 1.0,
        }
    }

    /// The model input at evaluation `index`.
    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        Ok(match self.parameterisation {
            Parameterisation::KDiffusion => {
                k_diffusion::scale_model_input(sample, self.sigmas[index])
            }
            Parameterisation::VariancePreserving => sample.clone(),
        })
    }

    /// Forward diffusion to the σ of evaluation `index`.
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        check_index(index, self.timesteps.len())?;
        let sigma = self.sigmas[index];
        match self.parameterisation {
            Parameterisation::KDiffusion => k_diffusion::add_noise(sigma, original, noise),
            Parameterisation::VariancePreserving => {
                let (alpha_t, sigma_t) = sigmas::alpha_sigma_t(sigma);
                map2("add_noise", original, noise, |x, n| {
                    alpha_t * x + sigma_t * n
                })
            }
        }
    }
}
