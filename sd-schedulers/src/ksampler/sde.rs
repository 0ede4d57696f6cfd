//! k-diffusion's DPM-Solver++ SDE steps (`sample_dpmpp_sde`, `sample_dpmpp_2m_sde`,
//! `sample_dpmpp_3m_sde`), as f32 element-wise maps in k-diffusion's operation order. Their noise
//! is Brownian-tree noise ([`BrownianNoise`]) over the run's σ range, seeded with the image's
//! seed, as A1111's `create_noise_sampler` builds it. diffusers' `DPMSolverSDEScheduler` takes
//! the same steps as `sample_dpmpp_sde` (`SdeStep`, `dpm_solver_sde.rs`).

use sd_core::{HostTensor, Result};

use super::{ancestral_step, sigma_of, t_of};
use crate::brownian::BrownianNoise;
use crate::elementwise::{map2, map3};

/// `sample_dpmpp_sde`'s `r`: the midpoint in t.
const R: f32 = 0.5;

/// One `sample_dpmpp_sde` step from σ to `next` > 0, in k-diffusion's times t = −ln σ.
pub(crate) struct SdeStep {
    t: f32,
    t_next: f32,
    s: f32,
}

impl SdeStep {
    pub fn new(sigma: f32, next: f32) -> Self {
        let (t, t_next) = (t_of(sigma), t_of(next));
        let h = t_next - t;
        SdeStep {
            t,
            t_next,
            s: t + h * R,
        }
    }

    /// σ of the step's second model evaluation: `sigma_fn(s)`.
    pub fn midpoint_sigma(&self) -> f32 {
        sigma_of(self.s)
    }

    /// Step 1: from `x` (denoised estimate `denoised`) to the midpoint sample `x_2`.
    pub fn to_midpoint(
        &self,
        x: &HostTensor,
        denoised: &HostTensor,
        eta: f32,
        s_noise: f32,
        noise: &mut BrownianNoise,
    ) -> Result<HostTensor> {
        let step = AncestralStep::new(self.t, self.s, eta);
        let x_2 = map2("DPM++ SDE step", x, denoised, |x, d| {
            step.ratio * x - step.weight * d
        })?;
        step.add_noise(&x_2, s_noise, noise)
    }

    /// Step 2: from the step's start `x` and both denoised estimates to the next sample.
    pub fn to_end(
        &self,
        x: &HostTensor,
        denoised: &HostTensor,
        denoised_2: &HostTensor,
        eta: f32,
        s_noise: f32,
        noise: &mut BrownianNoise,
    ) -> Result<HostTensor> {
        let step = AncestralStep::new(self.t, self.t_next, eta);
        let fac = 1.0 / (2.0 * R);
        let x = map3("DPM++ SDE step", x, denoised, denoised_2, |x, d, d_2| {
            step.ratio * x - step.weight * ((1.0 - fac) * d + fac * d_2)
        })?;
        step.add_noise(&x, s_noise, noise)
    }
}

/// DPM-Solver++'s first-order step from time t towards `t_to`, split as an ancestral step:
/// `x' = ratio·x − weight·denoised` lands at σ_down, then noise of σ_up from σ(t) to σ(t_to).
struct AncestralStep {
    sigma: f32,
    sigma_to: f32,
    up: f32,
    ratio: f32,
    weight: f32,
}

impl AncestralStep {
    fn new(t: f32, t_to: f32, eta: f32) -> Self {
        let (sigma, sigma_to) = (sigma_of(t), sigma_of(t_to));
        let (down, up) = ancestral_step(sigma, sigma_to, eta);
        let t_down = t_of(down);
        AncestralStep {
            sigma,
            sigma_to,
            up,
            ratio: sigma_of(t_down) / sigma,
            weight: (t - t_down).exp_m1(),
        }
    }

    /// `x + noise_sampler(σ(t), σ(t_to))·s_noise·σ_up`.
    fn add_noise(
        &self,
        x: &HostTensor,
        s_noise: f32,
        noise: &mut BrownianNoise,
    ) -> Result<HostTensor> {
        let n = noise.sample(self.sigma, self.sigma_to)?;
        let up = self.up;
        map2("SDE noise", x, &n, |x, n| x + n * s_noise * up)
    }
}

/// How `sample_dpmpp_2m_sde` corrects with the previous denoised estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SolverType {
    /// k-diffusion's default (A1111's "DPM++ 2M SDE").
    Midpoint,
    /// A1111's "DPM++ 2M SDE Heun".
    Heun,
}

/// What a `sample_dpmpp_2m_sde` step needs besides the sample and its denoised estimate.
pub(super) struct MultistepSde<'a> {
    pub sigma: f32,
    pub next: f32,
    pub eta: f32,
    pub s_noise: f32,
    pub solver: SolverType,
    /// The previous step's denoised estimate and h, if there was a previous step.
    pub previous: Option<(&'a HostTensor, f32)>,
}

impl MultistepSde<'_> {
    /// The step from σ to `next` > 0; also returns its h (the next step's `h_last`).
    pub fn step(
        &self,
        x: &HostTensor,
        denoised: &HostTensor,
        noise: &mut BrownianNoise,
    ) -> Result<(HostTensor, f32)> {
        let (sigma, next) = (self.sigma, self.next);
        let (t, s) = (t_of(sigma), t_of(next));
        let h = s - t;
        let eta_h = self.eta * h;
        let decay = next / sigma * (-eta_h).exp();
        let exponent = -h - eta_h;
        let gain = -exponent.exp_m1();
        let mut x = map2("DPM++ 2M SDE step", x, denoised, |x, d| {
            decay * x + gain * d
        })?;
        if let Some((old_denoised, h_last)) = self.previous {
            let r = h_last / h;
            let coefficient = match self.solver {
                SolverType::Midpoint => 0.5 * gain * (1.0 / r),
                SolverType::Heun => (gain / exponent + 1.0) * (1.0 / r),
            };
            x = map3(
                "DPM++ 2M SDE correction",
                &x,
                denoised,
                old_denoised,
                |x, d, o| x + coefficient * (d - o),
            )?;
        }
        if self.eta != 0.0 {
            let spread = (-(-2.0 * eta_h).exp_m1()).sqrt();
            let s_noise = self.s_noise;
            let n = noise.sample(sigma, next)?;
            x = map2("DPM++ 2M SDE noise", &x, &n, |x, n| {
                x + n * next * spread * s_noise
            })?;
        }
        Ok((x, h))
    }
}

/// What a `sample_dpmpp_3m_sde` step needs besides the sample and its denoised estimate.
pub(super) struct ThirdOrderSde<'a> {
    pub sigma: f32,
    pub next: f32,
    pub eta: f32,
    pub s_noise: f32,
    /// The previous step's denoised estimate and h, once there was a previous step.
    pub previous: Option<(&'a HostTensor, f32)>,
    /// The step before that's, once there were two.
    pub before_previous: Option<(&'a HostTensor, f32)>,
}

impl ThirdOrderSde<'_> {
    /// The step from σ to `next` > 0; also returns its h (the next step's `h_1`).
    pub fn step(
        &self,
        x: &HostTensor,
        denoised: &HostTensor,
        noise: &mut BrownianNoise,
    ) -> Result<(HostTensor, f32)> {
        let (sigma, next) = (self.sigma, self.next);
        let h = t_of(next) - t_of(sigma);
        let h_eta = h * (self.eta + 1.0);
        let decay = (-h_eta).exp();
        let gain = -(-h_eta).exp_m1();
        let mut x = map2("DPM++ 3M SDE step", x, denoised, |x, d| {
            decay * x + gain * d
        })?;
        // φ₂ of the exponential integrator, and φ₃ from it.
        let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
        match (self.previous, self.before_previous) {
            (Some((denoised_1, h_1)), Some((denoised_2, h_2))) => {
                let (r0, r1) = (h_1 / h, h_2 / h);
                let phi_3 = phi_2 / h_eta - 0.5;
                // Divided differences of the last three denoised estimates.
                let d1_0 = map2("DPM++ 3M SDE step", denoised, denoised_1, |d, d_1| {
                    (d - d_1) / r0
                })?;
                let d1_1 = map2("DPM++ 3M SDE step", denoised_1, denoised_2, |d_1, d_2| {
                    (d_1 - d_2) / r1
                })?;
                let d1 = map2("DPM++ 3M SDE step", &d1_0, &d1_1, |a, b| {
                    a + (a - b) * r0 / (r0 + r1)
                })?;
                let d2 = map2("DPM++ 3M SDE step", &d1_0, &d1_1, |a, b| {
                    (a - b) / (r0 + r1)
                })?;
                x = map3("DPM++ 3M SDE correction", &x, &d1, &d2, |x, d1, d2| {
                    x + phi_2 * d1 - phi_3 * d2
                })?;
            }
            (Some((denoised_1, h_1)), None) => {
                let r = h_1 / h;
                x = map3(
                    "DPM++ 3M SDE correction",
                    &x,
                    denoised,
                    denoised_1,
                    |x, d, d_1| x + phi_2 * ((d - d_1) / r),
                )?;
            }
            _ => {}
        }
        if self.eta != 0.0 {
            let spread = (-(-2.0 * h * self.eta).exp_m1()).sqrt();
            let s_noise = self.s_noise;
            let n = noise.sample(sigma, next)?;
            x = map2("DPM++ 3M SDE noise", &x, &n, |x, n| {
                x + n * next * spread * s_noise
            })?;
        }
        Ok((x, h))
    }
}
