//! The 32-bit Mersenne Twister (MT19937), as in C++ `std::mt19937` and torch's CPU generator.

const STATE_WORDS: usize = 624;
const SHIFT_OFFSET: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_BIT: u32 = 0x8000_0000;
const LOWER_BITS: u32 = 0x7fff_ffff;

/// MT19937 state; `next_u32` gives the tempered output stream.
#[derive(Clone)]
pub(crate) struct Mt19937 {
    state: [u32; STATE_WORDS],
    /// Index of the next state word to temper; `STATE_WORDS` means "twist first".
    next: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// The standard initialisation from a 32-bit seed (Knuth's multiplier 1812433253).
    pub(crate) fn new(seed: u32) -> Self {
        let mut state = [0u32; STATE_WORDS];
        state[0] = seed;
        for i in 1..STATE_WORDS {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 {
            state,
            next: STATE_WORDS,
        }
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.next == STATE_WORDS {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Regenerates all 624 words at once (the state is used as a ring: word i mixes i, i+1, i+397).
    fn twist(&mut self) {
        for i in 0..STATE_WORDS {
            let mixed =
                (self.state[i] & UPPER_BIT) | (self.state[(i + 1) % STATE_WORDS] & LOWER_BITS);
            let feedback = if mixed & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + SHIFT_OFFSET) % STATE_WORDS] ^ (mixed >> 1) ^ feedback;
        }
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::Mt19937;

    /// The C++ standard ([rand.predef]) requires the 10000th output of a default-constructed
    /// `std::mt19937` (seed 5489) to be 4123659995.
    #[test]
    fn ten_thousandth_output_of_seed_5489_is_the_cpp_standard_value() {
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    /// First outputs of `std::mt19937(5489)` (libstdc++; numpy's `MT19937` with legacy seeding
    /// gives the same).
    #[test]
    fn first_outputs_of_seed_5489_match_the_reference_generator() {
        let mut mt = Mt19937::new(5489);
        let first: Vec<u32> = (0..5).map(|_| mt.next_u32()).collect();
        assert_eq!(
            first,
            [
                3_499_211_612,
                581_869_302,
                3_890_346_734,
                3_586_334_585,
                545_404_204
            ]
        );
    }

    /// First output of `std::mt19937(0)` and `std::mt19937(1)` (libstdc++).
    #[test]
    fn first_output_for_small_seeds() {
        assert_eq!(Mt19937::new(0).next_u32(), 2_357_136_044);
        assert_eq!(Mt19937::new(1).next_u32(), 1_791_095_845);
    }
}
