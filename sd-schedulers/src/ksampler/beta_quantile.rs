//! The quantile function (inverse CDF) of the Beta(a, b) distribution in f64, what A1111's
//! "Beta" schedule type takes from `scipy.stats.beta.ppf`.
//!
//! The CDF is the regularised incomplete beta function I_x(a, b), evaluated by its continued
//! fraction (modified Lentz), on the side of the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where
//! the fraction converges fast. The quantile is found by bisection on [0, 1]: I_x is monotone,
//! and 100 halvings pin x to the last bit of an f64, far below the f32 the schedule is stored in.

/// x with I_x(a, b) = p, for p in [0, 1] and a, b > 0.
pub(crate) fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (mut low, mut high) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (low + high);
        if mid <= low || mid >= high {
            break;
        }
        if regularized_incomplete_beta(mid, a, b) < p {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// I_x(a, b) for x in [0, 1].
fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    // x^a (1−x)^b / (a·B(a, b)), the factor in front of the continued fraction.
    let log_front = a * x.ln() + b * (1.0 - x).ln() - log_beta(a, b);
    if x < (a + 1.0) / (a + b + 2.0) {
        (log_front.exp() / a) * continued_fraction(x, a, b)
    } else {
        1.0 - (log_front.exp() / b) * continued_fraction(1.0 - x, b, a)
    }
}

/// ln B(a, b) = ln Γ(a) + ln Γ(b) − ln Γ(a + b).
fn log_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// ln Γ(z) for z > 0 by the Lanczos approximation (g = 7, nine terms; relative error ~1e-15),
/// with the reflection-free shift z → z + 1 for small z.
fn ln_gamma(z: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if z < 0.5 {
        // Γ(z) = Γ(z + 1) / z.
        return ln_gamma(z + 1.0) - z.ln();
    }
    let z = z - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (z + i as f64);
    }
    let t = z + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (z + 0.5) * t.ln() - t + sum.ln()
}

/// The continued fraction of I_x(a, b) (modified Lentz's method).
fn continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPSILON: f64 = 1e-16;
    let clamp_tiny = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / clamp_tiny(1.0 - (a + b) * x / (a + 1.0));
    let mut result = d;
    for m in 1..=300 {
        let m = m as f64;
        // The even and odd terms of the fraction.
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / clamp_tiny(1.0 + even * d);
        c = clamp_tiny(1.0 + even / c);
        result *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / clamp_tiny(1.0 + odd * d);
        c = clamp_tiny(1.0 + odd / c);
        let delta = d * c;
        result *= delta;
        if (delta - 1.0).abs() < EPSILON {
            break;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_beta_has_its_median_at_one_half() {
        assert!((beta_quantile(0.5, 0.6, 0.6) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn uniform_beta_quantile_is_the_identity() {
        for p in [0.1, 0.25, 0.7, 0.99] {
            assert!((beta_quantile(p, 1.0, 1.0) - p).abs() < 1e-12, "{p}");
        }
    }

    #[test]
    fn beta_2_2_matches_its_closed_form_cdf() {
        // I_x(2, 2) = 3x² − 2x³.
        for x in [0.1f64, 0.3, 0.8] {
            let p = 3.0 * x * x - 2.0 * x.powi(3);
            assert!((beta_quantile(p, 2.0, 2.0) - x).abs() < 1e-12, "{x}");
        }
    }
}
