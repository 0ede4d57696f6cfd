//! AUTOMATIC1111's "NV" random source (`modules/rng_philox.py`): normal noise from Philox 4x32-10
//! counters, which A1111 made to give the numbers `torch.randn` gives on an NVIDIA GPU, on any
//! hardware.
//!
//! Per `randn` call of n elements, element i runs Philox 4x32 (10 rounds) on the counter
//! (call number, 0, i, 0) under the key (low, high 32 bits of the seed) and turns the first two
//! output words into one normal by Box–Muller, in f64 from A1111's f32 constants; each call
//! advances the call number by one, whatever its size.

use crate::tensor::HostTensor;

/// Philox's round multipliers and key increments (Salmon et al., 2011).
const ROUND_MULTIPLIERS: [u64; 2] = [0xD251_1F53, 0xCD9E_8D57];
const KEY_INCREMENTS: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];
const ROUNDS: usize = 10;

/// 2⁻³² and 2⁻³²·2π as A1111 writes them: decimal literals rounded to f32.
const TWO_POW32_INV: f32 = 2.328_306_4e-10;
const TWO_POW32_INV_2PI: f32 = (2.328_306_4e-10_f64 * 6.283_185_5_f64) as f32;

/// A1111's NV generator: a seed and the number of `randn` calls made so far.
#[derive(Debug, Clone)]
pub struct PhiloxGenerator {
    seed: u64,
    offset: u32,
}

impl PhiloxGenerator {
    /// `rng_philox.Generator(seed)`.
    pub fn new(seed: u64) -> Self {
        PhiloxGenerator { seed, offset: 0 }
    }

    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    /// `generator.randn(shape)`: one normal per element, then the next call's counters.
    pub fn randn(&mut self, shape: &[usize]) -> HostTensor {
        super::filled(shape, |data| self.randn_into(data))
    }

    /// Fills `out` as `randn((out.len(),))` would (only the element count matters).
    pub fn randn_into(&mut self, out: &mut [f32]) {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        for (i, x) in out.iter_mut().enumerate() {
            // A1111 counts elements in 32 bits (its counter word 2); past 2³² it wraps too.
            let words = philox4x32_10([self.offset, 0, i as u32, 0], key);
            *x = box_muller(words[0], words[1]);
        }
        self.offset = self.offset.wrapping_add(1);
    }
}

/// Philox 4x32 with 10 rounds, the key bumped between rounds.
fn philox4x32_10(mut counter: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for round in 0..ROUNDS {
        if round > 0 {
            key[0] = key[0].wrapping_add(KEY_INCREMENTS[0]);
            key[1] = key[1].wrapping_add(KEY_INCREMENTS[1]);
        }
        let first = u64::from(counter[0]) * ROUND_MULTIPLIERS[0];
        let second = u64::from(counter[2]) * ROUND_MULTIPLIERS[1];
        counter = [
            (second >> 32) as u32 ^ counter[1] ^ key[0],
            second as u32,
            (first >> 32) as u32 ^ counter[3] ^ key[1],
            first as u32,
        ];
    }
    counter
}

/// The first normal of Box–Muller on two 32-bit words, mapped to (0, 1) and (0, 2π) at the
/// centres of their 2⁻³² cells; f64 arithmetic (numpy promotes the u32 words), f32 result.
fn box_muller(x: u32, y: u32) -> f32 {
    let u = f64::from(x) * f64::from(TWO_POW32_INV) + f64::from(TWO_POW32_INV / 2.0);
    let v = f64::from(y) * f64::from(TWO_POW32_INV_2PI) + f64::from(TWO_POW32_INV_2PI / 2.0);
    let radius = (-2.0 * u.ln()).sqrt();
    (radius * v.sin()) as f32
}

#[cfg(test)]
mod tests {
    use super::PhiloxGenerator;

    /// The example of A1111's docstring: seed 0, shape (3, 4). Those values are torch's own CUDA
    /// output; A1111's f64 Box–Muller (and so this one) lands within 2.1e-7 of them. The
    /// bit-exact comparison is against tools/fixturegen/philox.py (sd-core/tests/philox.rs).
    #[test]
    fn reproduces_a1111s_documented_values() {
        let expected = [
            -0.92466259,
            -0.42534415,
            -2.6438457,
            0.14518388,
            -0.12086647,
            -0.57972564,
            -0.62285122,
            -0.32838709,
            -1.07454231,
            -0.36314407,
            -1.67105067,
            2.26550497,
        ];
        let noise = PhiloxGenerator::new(0).randn(&[3, 4]);
        for (got, want) in noise.iter().zip(expected) {
            assert!((f64::from(*got) - want).abs() < 3e-7, "{got} vs {want}");
        }
    }
}
