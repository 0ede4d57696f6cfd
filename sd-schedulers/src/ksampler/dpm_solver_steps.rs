//! The DPM-Solver-1/2/3 updates of k-diffusion's `DPMSolver` class (`dpm_solver_1_step`,
//! `_2_step`, `_3_step`) in time t = −ln σ, shared by DPM fast and DPM adaptive. ε is the
//! noise estimate `(x − denoised)/σ`; a step goes from t to `t_end` over h = t_end − t; the
//! scalar weights are f32 as k-diffusion's 0-dimensional tensors are, Python floats (r₁, r₂)
//! rounded to f32 where they meet one.

use sd_core::{HostTensor, Result};

use crate::elementwise::{map2, map3};

/// σ = e^(−t).
pub(super) fn sigma_at(t: f32) -> f32 {
    (-t).exp()
}

/// One DPM-Solver step from `t` to `t_end`.
#[derive(Debug, Clone, Copy)]
pub(super) struct SolverStep {
    pub t: f32,
    pub t_end: f32,
}

impl SolverStep {
    pub fn h(&self) -> f32 {
        self.t_end - self.t
    }

    /// The time `t + r·h` of an intermediate evaluation (`r` a Python float).
    pub fn time_at(&self, r: f64) -> f32 {
        self.t + r as f32 * self.h()
    }

    /// `x − σ(t + r·h)·expm1(r·h)·ε`: the first-order move to `t + r·h` (with r = 1 and the
    /// end's σ, DPM-Solver-1 itself).
    pub fn first_order(&self, x: &HostTensor, eps: &HostTensor, r: f64) -> Result<HostTensor> {
        let rh = r as f32 * self.h();
        let weight = sigma_at(self.t + rh) * rh.exp_m1();
        map2("DPM-Solver", x, eps, |x, e| x - weight * e)
    }

    /// DPM-Solver-1: `x − σ(t_end)·expm1(h)·ε`.
    pub fn order_1(&self, x: &HostTensor, eps: &HostTensor) -> Result<HostTensor> {
        let weight = sigma_at(self.t_end) * self.h().exp_m1();
        map2("DPM-Solver-1", x, eps, |x, e| x - weight * e)
    }

    /// DPM-Solver-2's end, with ε₁ evaluated at `t + r₁·h`:
    /// `x − σ(t_end)·expm1(h)·ε − σ(t_end)/(2r₁)·expm1(h)·(ε₁ − ε)`.
    pub fn order_2(
        &self,
        x: &HostTensor,
        eps: &HostTensor,
        eps_r1: &HostTensor,
        r1: f64,
    ) -> Result<HostTensor> {
        let (sigma_end, expm1_h) = (sigma_at(self.t_end), self.h().exp_m1());
        let w0 = sigma_end * expm1_h;
        let w1 = sigma_end / (2.0 * r1) as f32 * expm1_h;
        map3("DPM-Solver-2", x, eps, eps_r1, |x, e, e1| {
            x - w0 * e - w1 * (e1 - e)
        })
    }

    /// DPM-Solver-3's second intermediate sample (at `t + r₂·h`, r₁ = ⅓, r₂ = ⅔), with ε₁
    /// evaluated at `t + r₁·h`.
    pub fn order_3_midpoint(
        &self,
        x: &HostTensor,
        eps: &HostTensor,
        eps_r1: &HostTensor,
    ) -> Result<HostTensor> {
        let r2h = R2 as f32 * self.h();
        let sigma_2 = sigma_at(self.t + r2h);
        let w0 = sigma_2 * r2h.exp_m1();
        let w1 = sigma_2 * (R2 / R1) as f32 * (r2h.exp_m1() / r2h - 1.0);
        map3("DPM-Solver-3", x, eps, eps_r1, |x, e, e1| {
            x - w0 * e - w1 * (e1 - e)
        })
    }

    /// DPM-Solver-3's end, with ε₂ evaluated at `t + r₂·h`.
    pub fn order_3(
        &self,
        x: &HostTensor,
        eps: &HostTensor,
        eps_r2: &HostTensor,
    ) -> Result<HostTensor> {
        let h = self.h();
        let sigma_end = sigma_at(self.t_end);
        let w0 = sigma_end * h.exp_m1();
        let w2 = sigma_end / R2 as f32 * (h.exp_m1() / h - 1.0);
        map3("DPM-Solver-3", x, eps, eps_r2, |x, e, e2| {
            x - w0 * e - w2 * (e2 - e)
        })
    }
}

/// DPM-Solver-3's r₁ and r₂ (Python floats).
pub(super) const R1: f64 = 1.0 / 3.0;
pub(super) const R2: f64 = 2.0 / 3.0;
