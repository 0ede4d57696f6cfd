//! numpy's `SeedSequence` (numpy ≥ 1.19, `numpy/random/bit_generator.pyx`): the hash that turns an
//! entropy value and a spawn key into a pool of 32-bit words, and `generate_state`, which draws
//! seeds from the pool. torchsde derives the torch seed of every Brownian-tree node from it.
//!
//! The algorithm is O'Neill's `seed_seq_fe` design as numpy implements it; all arithmetic is on
//! wrapping 32-bit words.

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

/// The mixed entropy pool of one `SeedSequence(entropy, spawn_key=…, pool_size=…)`.
#[derive(Debug, Clone)]
pub(crate) struct SeedSequence {
    pool: Vec<u32>,
}

impl SeedSequence {
    /// `SeedSequence(entropy, spawn_key=spawn_key, pool_size=pool_size)` for a non-negative
    /// integer entropy and a spawn key of non-negative integers.
    pub fn new(entropy: u64, spawn_key: &[u64], pool_size: usize) -> Self {
        let mut words = int_words(entropy);
        let spawn_words: Vec<u32> = spawn_key.iter().flat_map(|&k| int_words(k)).collect();
        // numpy pads the run entropy to the pool size when there is a spawn key, so that spawned
        // sequences cannot collide with unspawned ones of longer entropy.
        if !spawn_words.is_empty() && words.len() < pool_size {
            words.resize(pool_size, 0);
        }
        words.extend(spawn_words);
        let mut sequence = SeedSequence {
            pool: vec![0; pool_size],
        };
        sequence.mix_entropy(&words);
        sequence
    }

    fn mix_entropy(&mut self, entropy: &[u32]) {
        let mut hash = INIT_A;
        let pool_size = self.pool.len();
        for i in 0..pool_size {
            let word = entropy.get(i).copied().unwrap_or(0);
            self.pool[i] = hashmix(word, &mut hash);
        }
        // Every word of the pool influences every other.
        for src in 0..pool_size {
            for dst in 0..pool_size {
                if src != dst {
                    let hashed = hashmix(self.pool[src], &mut hash);
                    self.pool[dst] = mix(self.pool[dst], hashed);
                }
            }
        }
        // Entropy beyond the pool size is folded into every pool word.
        for &word in entropy.iter().skip(pool_size) {
            for dst in 0..pool_size {
                let hashed = hashmix(word, &mut hash);
                self.pool[dst] = mix(self.pool[dst], hashed);
            }
        }
    }

    /// `generate_state(n_words)` with the default dtype uint32.
    pub fn generate_state(&self, n_words: usize) -> Vec<u32> {
        let mut hash = INIT_B;
        self.pool
            .iter()
            .cycle()
            .take(n_words)
            .map(|&word| {
                let mut value = word ^ hash;
                hash = hash.wrapping_mul(MULT_B);
                value = value.wrapping_mul(hash);
                value ^ (value >> XSHIFT)
            })
            .collect()
    }
}

/// numpy's `_int_to_uint32_array`: little-endian 32-bit words, `[0]` for zero.
fn int_words(mut n: u64) -> Vec<u32> {
    if n == 0 {
        return vec![0];
    }
    let mut words = Vec::with_capacity(2);
    while n > 0 {
        words.push(n as u32);
        n >>= 32;
    }
    words
}

fn hashmix(value: u32, hash: &mut u32) -> u32 {
    let mut value = value ^ *hash;
    *hash = hash.wrapping_mul(MULT_A);
    value = value.wrapping_mul(*hash);
    value ^ (value >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let result = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    result ^ (result >> XSHIFT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::SeedSequence;

    /// numpy splits an integer into 32-bit words, least significant first.
    #[test]
    fn integers_split_into_little_endian_words() {
        assert_eq!(super::int_words((1 << 32) + 5), vec![5, 1]);
        assert_eq!(super::int_words(7), vec![7]);
        assert_eq!(super::int_words(0), vec![0]);
    }

    /// `np.random.SeedSequence(entropy, spawn_key=…, pool_size=…).generate_state(n)` for the
    /// cases of `fixtures/goldens/a1111_sde.json` (tools/fixturegen/a1111_sde.py).
    #[test]
    fn states_equal_numpy() {
        let manifest = crate::brownian::golden_manifest();
        let cases = manifest["seed_sequences"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let numbers = |key: &str| -> Vec<u64> {
                case[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect()
            };
            let expected: Vec<u32> = numbers("state").into_iter().map(|w| w as u32).collect();
            let sequence = SeedSequence::new(
                case["entropy"].as_u64().unwrap(),
                &numbers("spawn_key"),
                case["pool_size"].as_u64().unwrap() as usize,
            );
            assert_eq!(sequence.generate_state(expected.len()), expected, "{case}");
        }
    }
}
