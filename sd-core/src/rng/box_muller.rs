//! Box–Muller on blocks of 16 uniforms, as torch's `normal_fill_16` kernels do it.

use super::NormalMode;
use super::cephes_f32;

/// torch's block: uniforms `d[j]` and `d[j + 8]` (j < 8) become the pair of normals
/// `r·cos θ` and `r·sin θ`.
pub(crate) const BLOCK: usize = 16;
const HALF: usize = BLOCK / 2;

/// Turns 16 uniforms in [0, 1) into 16 standard normals, in place.
///
/// `block.len()` must be `BLOCK`; callers pass `chunks_exact(BLOCK)` pieces.
#[inline]
pub(crate) fn normals_from_uniforms(block: &mut [f32], mode: NormalMode) {
    let (cos_half, sin_half) = block.split_at_mut(HALF);
    match mode {
        NormalMode::Avx2 => {
            // 2π rounded once to f32, and every step in f32 (torch's `_mm256_set1_ps(2π)`).
            let two_pi = std::f64::consts::TAU as f32;
            for (a, b) in cos_half.iter_mut().zip(sin_half.iter_mut()) {
                let radius = (-2.0 * cephes_f32::ln(1.0 - *a)).sqrt();
                let (sin, cos) = cephes_f32::sin_cos(two_pi * *b);
                // `+ 0.0` is the kernel's final `fma(n, std = 1, mean = 0)`: it maps -0 to +0.
                *a = radius * cos + 0.0;
                *b = radius * sin + 0.0;
            }
        }
        NormalMode::Libm => {
            for (a, b) in cos_half.iter_mut().zip(sin_half.iter_mut()) {
                let radius = (-2.0 * (1.0 - *a).ln()).sqrt();
                // The scalar kernel forms θ in double and rounds it to float.
                let theta = (std::f64::consts::TAU * f64::from(*b)) as f32;
                *a = radius * theta.cos() + 0.0;
                *b = radius * theta.sin() + 0.0;
            }
        }
    }
}

/// One pair of standard normals from two f64 uniforms: torch's `normal_distribution<double>`,
/// used for tensors of fewer than 16 elements. Returns `(r·cos θ, r·sin θ)`; torch hands out the
/// first and caches the second.
pub(crate) fn normal_pair_f64(u1: f64, u2: f64) -> (f64, f64) {
    let radius = (-2.0 * (-u2).ln_1p()).sqrt();
    let theta = std::f64::consts::TAU * u1;
    (radius * theta.cos(), radius * theta.sin())
}
