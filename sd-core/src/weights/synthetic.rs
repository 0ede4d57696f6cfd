//! Seeded random weights made on request, for benchmarks of full-size models without a download.
//!
//! A synthetic store has no files: model code asks for each parameter with
//! [`Weights::get_shaped`](super::Weights::get_shaped) as usual, and gets values drawn for that
//! name and shape — so the model code itself is the only description of the architecture.
//! The values follow PyTorch's default initialisation closely enough to keep activations finite
//! and normal (no denormals to slow the arithmetic): matrices and kernels uniform in
//! `±1/√fan_in`, 1-D `weight`s (norm scales) near 1, biases near 0.

use rayon::prelude::*;

use crate::tensor::HostTensor;

/// Spread of the 1-D parameters around their centres (1 for norm scales, 0 for biases).
const VECTOR_SPREAD: f32 = 0.02;

/// Values per independently seeded chunk (lets large tensors fill in parallel).
const CHUNK: usize = 1 << 16;

/// The random parameter source of [`WeightStore::synthetic`](super::WeightStore::synthetic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synthetic {
    pub seed: u64,
}

impl Synthetic {
    /// The parameter `name` (its full diffusers name) in `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> HostTensor {
        let (centre, bound) = match shape {
            [_] if name.ends_with("weight") => (1.0, VECTOR_SPREAD),
            [_] => (0.0, VECTOR_SPREAD),
            [_, rest @ ..] => {
                let fan_in: usize = rest.iter().product();
                (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
            }
            [] => (0.0, VECTOR_SPREAD),
        };
        let len: usize = shape.iter().product();
        let mut values = vec![0.0f32; len];
        let name_seed = fnv1a(name.as_bytes()) ^ self.seed;
        values
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(chunk, out)| {
                let mut state =
                    name_seed.wrapping_add((chunk as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for v in out {
                    *v = centre + bound * symmetric_unit(splitmix64(&mut state));
                }
            });
        // `values` has exactly product(shape) elements.
        HostTensor::from_shape_vec(shape.to_vec(), values)
            .unwrap_or_else(|_| HostTensor::zeros(shape.to_vec()))
    }
}

/// 64-bit FNV-1a: a name's stable seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64: a fast, well-mixed stream (quality is irrelevant here, speed and repeatability
/// are not).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The top 24 bits as a float in `[-1, 1)`.
fn symmetric_unit(bits: u64) -> f32 {
    ((bits >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::Synthetic;

    #[test]
    fn values_are_repeatable_and_depend_on_name_and_seed() {
        let a = Synthetic { seed: 1 }.tensor("conv.weight", &[4, 3, 3, 3]);
        assert_eq!(
            a,
            Synthetic { seed: 1 }.tensor("conv.weight", &[4, 3, 3, 3])
        );
        assert_ne!(
            a,
            Synthetic { seed: 2 }.tensor("conv.weight", &[4, 3, 3, 3])
        );
        assert_ne!(
            a,
            Synthetic { seed: 1 }.tensor("conv2.weight", &[4, 3, 3, 3])
        );
        let bound = 1.0 / 27f32.sqrt();
        assert!(a.iter().all(|v| v.abs() <= bound));
    }

    #[test]
    fn norm_scales_sit_near_one_and_biases_near_zero() {
        let scale = Synthetic { seed: 0 }.tensor("norm.weight", &[320]);
        let bias = Synthetic { seed: 0 }.tensor("norm.bias", &[320]);
        assert!(scale.iter().all(|v| (v - 1.0).abs() <= 0.02));
        assert!(bias.iter().all(|v| v.abs() <= 0.02));
    }
}
