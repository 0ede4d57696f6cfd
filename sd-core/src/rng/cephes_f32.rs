//! Single-precision `ln` and `sincos` rounding exactly like torch's AVX2 Box–Muller kernel.
//!
//! torch (`aten/src/ATen/native/cpu/avx_mathfun.h`) evaluates Cephes' `logf`/`sinf`/`cosf`
//! polynomials eight lanes at a time in f32. Bit-exactness depends on the order of every rounding,
//! including which multiply-adds GCC contracted into FMAs when it compiled torch: those, and only
//! those, are written here as `mul_add` (found against torch's own draws, which
//! `fixtures/goldens/randn.safetensors` pins bit for bit). The domain
//! handling of the original (NaN for x <= 0, huge arguments) is not needed: Box–Muller only calls
//! `ln` on (0, 1] and `sincos` on [0, 2π).

/// The C sources write these as double literals that the compiler rounds to float; going through
/// f64 here rounds the same way (a direct f32 literal could round differently).
const fn to_f32(x: f64) -> f32 {
    x as f32
}

const SQRT_HALF: f32 = to_f32(std::f64::consts::FRAC_1_SQRT_2);
/// Cephes `logf`: ln(1 + x) ≈ x - x²/2 + x³·P(x) for x ∈ [√½ - 1, √2 - 1]; P, highest degree first.
const LOG_POLY: [f32; 9] = [
    to_f32(7.037_683_629_2e-2),
    to_f32(-1.151_461_031_0e-1),
    to_f32(1.167_699_874_0e-1),
    to_f32(-1.242_014_084_6e-1),
    to_f32(1.424_932_278_7e-1),
    to_f32(-1.666_805_766_5e-1),
    to_f32(2.000_071_476_5e-1),
    to_f32(-2.499_999_399_3e-1),
    to_f32(3.333_333_117_4e-1),
];
/// ln 2 split in two: a short head (exact when multiplied by an exponent) and the tail.
const LN2_HEAD: f32 = to_f32(0.693_359_375);
const LN2_TAIL: f32 = to_f32(-2.121_944_40e-4);

/// ln(x) for a positive normal f32, rounded as torch's `log256_ps`.
#[inline(always)]
pub(crate) fn ln(x: f32) -> f32 {
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    // Split x = m · 2^e with m ∈ [0.5, 1).
    let mut e = ((bits >> 23) as i32 - 127) as f32 + 1.0;
    let m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    // Move m into [√½, √2) so that ln(m) is small: for m < √½ use 2m and e - 1.
    let below = m < SQRT_HALF;
    let extra = if below { m } else { 0.0 };
    e -= if below { 1.0 } else { 0.0 };
    let x = (m - 1.0) + extra;

    let z = x * x;
    let mut y = LOG_POLY[0];
    for &c in &LOG_POLY[1..] {
        y = y.mul_add(x, c);
    }
    y = (y * x).mul_add(z, e * LN2_TAIL);
    y -= z * 0.5;
    e.mul_add(LN2_HEAD, x + y)
}

const FOUR_OVER_PI: f32 = to_f32(1.273_239_544_735_16);
/// π/4 in three parts for Cody–Waite reduction (the first two are exact in few bits).
const PI_OVER_4_PARTS: [f32; 3] = [
    to_f32(0.785_156_25),
    to_f32(2.418_756_484_985_351_6e-4),
    to_f32(3.774_894_977_445_941e-8),
];
const SIN_POLY: [f32; 3] = [
    to_f32(-1.951_529_589_1e-4),
    to_f32(8.332_160_873_6e-3),
    to_f32(-1.666_665_461_1e-1),
];
const COS_POLY: [f32; 3] = [
    to_f32(2.443_315_711_809_948e-5),
    to_f32(-1.388_731_625_493_765e-3),
    to_f32(4.166_664_568_298_827e-2),
];
const SIGN_BIT: u32 = 0x8000_0000;

/// (sin x, cos x) for |x| well below 8192, rounded as torch's `sincos256_ps`.
#[inline(always)]
pub(crate) fn sin_cos(x: f32) -> (f32, f32) {
    let input_sign = x.to_bits() & SIGN_BIT;
    let ax = x.abs();
    // Octant j (rounded up to even) and the reduced argument r = |x| - j·π/4 ∈ [-π/4, π/4].
    let j = ((ax * FOUR_OVER_PI) as i32 + 1) & !1;
    let jf = j as f32;
    let mut r = jf.mul_add(-PI_OVER_4_PARTS[0], ax);
    r = jf.mul_add(-PI_OVER_4_PARTS[1], r);
    r = jf.mul_add(-PI_OVER_4_PARTS[2], r);

    let z = r * r;
    let mut cos_r = COS_POLY[0].mul_add(z, COS_POLY[1]).mul_add(z, COS_POLY[2]);
    cos_r = (cos_r * z).mul_add(z, -(z * 0.5));
    cos_r += 1.0;
    let mut sin_r = SIN_POLY[0].mul_add(z, SIN_POLY[1]).mul_add(z, SIN_POLY[2]);
    sin_r = (sin_r * z).mul_add(r, r);

    // In octants 0, 3, 4, 7 (j & 2 == 0) sin x uses the sine polynomial, else the cosine one.
    // The kernel blends with masks and adds, turning a -0 into +0; keep the same operations.
    let sine_poly_for_sin = j & 2 == 0;
    let (sin_from_sin, sin_from_cos) = if sine_poly_for_sin {
        (sin_r, 0.0)
    } else {
        (0.0, cos_r)
    };
    let sin_abs = sin_from_cos + sin_from_sin;
    let cos_abs = (cos_r - sin_from_cos) + (sin_r - sin_from_sin);

    let sin_sign = input_sign ^ (((j & 4) as u32) << 29);
    let cos_sign = ((!(j - 2) & 4) as u32) << 29;
    (
        f32::from_bits(sin_abs.to_bits() ^ sin_sign),
        f32::from_bits(cos_abs.to_bits() ^ cos_sign),
    )
}

#[cfg(test)]
mod tests {
    use super::{ln, sin_cos};

    // These only check that the polynomials compute the right functions (within the few ulp the
    // Cephes approximations promise); bit-exactness against torch is tested on real torch output
    // in tests/torch_randn.rs.
    const CEPHES_F32_TOLERANCE: f32 = 4.0 * f32::EPSILON;

    #[test]
    fn ln_is_close_to_std_ln_on_the_box_muller_domain() {
        for k in 1..=4096u32 {
            let x = k as f32 / 4096.0;
            let want = f64::from(x).ln();
            let got = f64::from(ln(x));
            assert!(
                (got - want).abs() <= f64::from(CEPHES_F32_TOLERANCE) * want.abs().max(1e-3),
                "ln({x})"
            );
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn sin_cos_are_close_to_std_on_zero_to_two_pi() {
        for k in 0..4096u32 {
            let x = k as f32 * (std::f32::consts::TAU / 4096.0);
            let (s, c) = sin_cos(x);
            let (ws, wc) = f64::from(x).sin_cos();
            assert!(
                (f64::from(s) - ws).abs() <= f64::from(CEPHES_F32_TOLERANCE),
                "sin({x}) = {s}, want {ws}"
            );
            assert!(
                (f64::from(c) - wc).abs() <= f64::from(CEPHES_F32_TOLERANCE),
                "cos({x}) = {c}, want {wc}"
            );
        }
    }
}
