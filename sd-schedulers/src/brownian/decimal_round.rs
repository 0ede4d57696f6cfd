//! Python's `round(x, 6)` on a float, bit for bit: the exact binary value rounded to six
//! decimals (ties to even), then the double nearest that decimal. torchsde snaps every time of
//! its Brownian tree to this grid (its tolerance 1e-6), so node boundaries must agree exactly.

/// Decimals torchsde keeps: `-int(log10(tol))` for its default `tol = 1e-6`.
const DIGITS_SCALE: u128 = 1_000_000;

/// Magnitudes from which six decimals no longer fit the 53-bit exact path below.
pub(crate) const MAX_EXACT: f64 = 1e9;

/// `round(x, 6)` for finite `|x| < MAX_EXACT` (other values are returned unchanged).
pub(crate) fn round_micro(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 || x.abs() >= MAX_EXACT {
        return x;
    }
    let bits = x.abs().to_bits();
    let biased_exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    // |x| = mantissa · 2^exponent exactly.
    let (mantissa, exponent) = if biased_exponent == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased_exponent - 1075)
    };
    if exponent >= 0 {
        return x; // an integer already
    }
    // |x|·10⁶ = scaled / 2^shift; round that quotient half to even.
    let scaled = u128::from(mantissa) * DIGITS_SCALE;
    let shift = exponent.unsigned_abs();
    let micros = if shift >= 127 {
        0
    } else {
        let quotient = scaled >> shift;
        let remainder = scaled - (quotient << shift);
        let half = 1u128 << (shift - 1);
        if remainder > half || (remainder == half && quotient & 1 == 1) {
            quotient + 1
        } else {
            quotient
        }
    };
    // micros < 10¹⁵ < 2⁵³ is exact, and one IEEE division is the nearest double to micros/10⁶.
    (micros as f64 / 1e6).copysign(x)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::round_micro;

    /// Python's own `round(x, 6)` on the values of `fixtures/goldens/a1111_sde.json`
    /// (tools/fixturegen/a1111_sde.py): random times, dyadic ties, midpoints of sums.
    #[test]
    fn equals_python_round() {
        let manifest = crate::brownian::golden_manifest();
        let pairs = manifest["round6"].as_array().unwrap();
        assert!(pairs.len() > 1000);
        for pair in pairs {
            let (x, expected) = (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap());
            assert_eq!(
                round_micro(x).to_bits(),
                expected.to_bits(),
                "round({x}, 6)"
            );
        }
    }

    /// Values whose Python `round(x, 6)` is known: ties at the seventh decimal go to the even
    /// neighbour only when the binary value is exactly the tie (1/128 = 0.0078125).
    #[test]
    fn rounds_as_python() {
        assert_eq!(round_micro(0.0078125), 0.007812);
        assert_eq!(round_micro(0.0234375), 0.023438);
        assert_eq!(round_micro(14.614642143249512), 14.614642);
        assert_eq!(round_micro(0.029167532920837402), 0.029168);
        assert_eq!(round_micro(-2.5e-7), -0.0);
        assert!(round_micro(-2.5e-7).is_sign_negative());
        assert_eq!(round_micro(3.0), 3.0);
    }
}
