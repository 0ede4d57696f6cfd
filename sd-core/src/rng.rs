//! `TorchGenerator`: a bit-exact reimplementation of `torch.Generator("cpu")` + `torch.randn`.
//!
//! How torch makes its numbers (checked against torch 2.15 on x86-64):
//! - the engine is MT19937 seeded with the low 32 bits of the seed;
//! - a tensor of n ≥ 16 floats is first filled with f32 uniforms, then turned into normals by
//!   Box–Muller on blocks of 16 (`box_muller`); when 16 does not divide n, 16 fresh uniforms
//!   overwrite the last 16 slots and that block is transformed again;
//! - a tensor of n < 16 floats gets one double-precision Box–Muller normal per element; each pair
//!   yields two normals and the generator keeps the second for the next element, across calls.
//!
//! The n ≥ 16 path rounds like torch's AVX2/AVX-512 kernel by default ([`NormalMode::Avx2`]);
//! [`NormalMode::Libm`] follows torch run with `ATEN_CPU_CAPABILITY=default`.

mod box_muller;
mod cephes_f32;
mod mt19937;
mod philox;

pub use philox::PhiloxGenerator;

use std::convert::Infallible;

use crate::tensor::HostTensor;
use box_muller::BLOCK;
use mt19937::Mt19937;

/// Where a generation's random numbers come from (A1111's "Random number generator source").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RngSource {
    /// torch's CPU generator ([`TorchGenerator`]): what diffusers users seed, A1111's "CPU".
    #[default]
    Cpu,
    /// A1111's "NV" ([`PhiloxGenerator`]): A1111's imitation of torch's CUDA generator.
    Nv,
}

impl RngSource {
    /// A generator of this source seeded with `seed`.
    pub fn generator(self, seed: u64) -> Box<dyn NormalSource> {
        match self {
            RngSource::Cpu => Box::new(TorchGenerator::new(seed)),
            RngSource::Nv => Box::new(PhiloxGenerator::new(seed)),
        }
    }

    /// How A1111 writes it in the `RNG:` infotext field (`CPU`, `NV`).
    pub fn a1111_name(self) -> &'static str {
        match self {
            RngSource::Cpu => "CPU",
            RngSource::Nv => "NV",
        }
    }

    /// `cpu` or `nv` (any case; A1111's `CPU`/`NV` too).
    pub fn parse(text: &str) -> Option<RngSource> {
        match text.trim().to_ascii_lowercase().as_str() {
            "cpu" => Some(RngSource::Cpu),
            "nv" => Some(RngSource::Nv),
            _ => None,
        }
    }
}

/// A new tensor of `shape` whose elements `fill` writes in standard (row-major) order.
fn filled(shape: &[usize], fill: impl FnOnce(&mut [f32])) -> HostTensor {
    let mut tensor = HostTensor::zeros(ndarray::IxDyn(shape));
    match tensor.as_slice_mut() {
        Some(data) => fill(data),
        None => unreachable!("a freshly allocated array is contiguous in standard order"),
    }
    tensor
}

/// A seeded stream of standard normal noise, drawn a tensor at a time as `torch.randn` draws it.
/// Samplers and latent sampling take one per image (or per batch), whatever its source.
pub trait NormalSource: Send + std::fmt::Debug {
    /// The next `randn(shape)` of the stream (f32, contiguous).
    fn randn(&mut self, shape: &[usize]) -> HostTensor;

    /// The seed the stream started from (the image's seed). A1111 seeds the Brownian-tree
    /// noise of its SDE samplers with it, whatever the generator.
    fn initial_seed(&self) -> u64;
}

impl NormalSource for TorchGenerator {
    fn randn(&mut self, shape: &[usize]) -> HostTensor {
        TorchGenerator::randn(self, shape)
    }

    fn initial_seed(&self) -> u64 {
        TorchGenerator::initial_seed(self)
    }
}

impl NormalSource for PhiloxGenerator {
    fn randn(&mut self, shape: &[usize]) -> HostTensor {
        PhiloxGenerator::randn(self, shape)
    }

    fn initial_seed(&self) -> u64 {
        PhiloxGenerator::initial_seed(self)
    }
}

/// Which of torch's CPU `randn` kernels to reproduce for tensors of 16 or more elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NormalMode {
    /// torch on an AVX2 or AVX-512 CPU (what diffusers users almost always run): Cephes
    /// polynomials in f32 with fused multiply-adds.
    #[default]
    Avx2,
    /// torch with `ATEN_CPU_CAPABILITY=default`: the C library's `logf`/`cosf`/`sinf`. Matches only
    /// where this program and torch call the same libm (e.g. the same glibc).
    Libm,
}

/// torch's CPU generator (MT19937) with its `randn`.
///
/// Also a [`rand_core::Rng`] whose output is the raw MT19937 stream, so `rand` distributions can be
/// driven by the same state.
#[derive(Debug, Clone)]
pub struct TorchGenerator {
    seed: u64,
    engine: Mt19937,
    /// Second normal of the last double-precision Box–Muller pair (torch's
    /// `next_double_normal_sample`); only the n < 16 path reads or writes it.
    cached_normal: Option<f64>,
    mode: NormalMode,
}

impl TorchGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)`.
    ///
    /// torch accepts negative Python seeds and maps them to `seed + 2^64`; pass that value here.
    pub fn new(seed: u64) -> Self {
        TorchGenerator {
            seed,
            engine: Mt19937::new(Self::engine_seed(seed)),
            cached_normal: None,
            mode: NormalMode::default(),
        }
    }

    /// Selects the `randn` kernel to reproduce (default [`NormalMode::Avx2`]).
    pub fn with_normal_mode(mut self, mode: NormalMode) -> Self {
        self.mode = mode;
        self
    }

    /// The `randn` kernel this generator reproduces.
    pub fn normal_mode(&self) -> NormalMode {
        self.mode
    }

    /// `generator.manual_seed(seed)`: restarts the stream and drops the cached normal.
    pub fn manual_seed(&mut self, seed: u64) {
        self.seed = seed;
        self.engine = Mt19937::new(Self::engine_seed(seed));
        self.cached_normal = None;
    }

    /// `generator.initial_seed()`: the full 64-bit seed, although only its low 32 bits seed MT19937.
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    /// torch seeds the engine with `seed & 0xffffffff`: seeds 7 and 2^32 + 7 give the same numbers.
    fn engine_seed(seed: u64) -> u32 {
        seed as u32
    }

    /// `torch.randn(shape, generator=self)` (float32, contiguous).
    ///
    /// Panics, like `ndarray`'s constructors, if the element count overflows `isize`.
    pub fn randn(&mut self, shape: &[usize]) -> HostTensor {
        filled(shape, |data| self.randn_into(data))
    }

    /// Fills `out` as `torch.randn(out.len(), generator=self)` would. Only the element count
    /// matters to torch, so this also serves any shape laid out contiguously.
    pub fn randn_into(&mut self, out: &mut [f32]) {
        if out.len() < BLOCK {
            for x in out.iter_mut() {
                *x = self.next_normal_f64() as f32;
            }
            return;
        }
        for x in out.iter_mut() {
            *x = self.next_uniform_f32();
        }
        for block in out.chunks_exact_mut(BLOCK) {
            box_muller::normals_from_uniforms(block, self.mode);
        }
        if !out.len().is_multiple_of(BLOCK) {
            let tail_start = out.len() - BLOCK;
            let tail = &mut out[tail_start..];
            for x in tail.iter_mut() {
                *x = self.next_uniform_f32();
            }
            box_muller::normals_from_uniforms(tail, self.mode);
        }
    }

    /// `random64()`: two engine outputs, the first one in the high half.
    fn next_random64(&mut self) -> u64 {
        let high = u64::from(self.engine.next_u32());
        (high << 32) | u64::from(self.engine.next_u32())
    }

    /// Uniform in [0, 1) from the low 24 bits of one engine output.
    fn next_uniform_f32(&mut self) -> f32 {
        const MANTISSA: u32 = (1 << f32::MANTISSA_DIGITS) - 1;
        (self.engine.next_u32() & MANTISSA) as f32 * (1.0 / (1u32 << f32::MANTISSA_DIGITS) as f32)
    }

    /// Uniform in [0, 1) from the low 53 bits of `random64()`.
    fn next_uniform_f64(&mut self) -> f64 {
        const MANTISSA: u64 = (1 << f64::MANTISSA_DIGITS) - 1;
        (self.next_random64() & MANTISSA) as f64 * (1.0 / (1u64 << f64::MANTISSA_DIGITS) as f64)
    }

    /// torch's `normal_distribution<double>`: the cached normal if there is one, else a new pair.
    fn next_normal_f64(&mut self) -> f64 {
        // torch returns `value * std + mean` with std 1 and mean 0: the `+ 0.0` maps -0 to +0.
        if let Some(cached) = self.cached_normal.take() {
            return cached + 0.0;
        }
        let u1 = self.next_uniform_f64();
        let u2 = self.next_uniform_f64();
        let (first, second) = box_muller::normal_pair_f64(u1, u2);
        self.cached_normal = Some(second);
        first + 0.0
    }
}

/// The raw MT19937 stream: `next_u32` is one engine output, `next_u64` is torch's `random64()`
/// (first output in the high half) and `fill_bytes` writes successive outputs little-endian.
/// These draws bypass the cached normal, as torch's `random_()` does.
impl rand_core::TryRng for TorchGenerator {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.engine.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next_random64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand_core::utils::fill_bytes_via_next_word(dst, || self.try_next_u32())
    }
}

/// Seeds are torch seeds: `seed_from_u64(s)` is `manual_seed(s)`, `from_seed` reads a little-endian u64.
impl rand_core::SeedableRng for TorchGenerator {
    type Seed = [u8; 8];

    fn from_seed(seed: [u8; 8]) -> Self {
        TorchGenerator::new(u64::from_le_bytes(seed))
    }

    fn seed_from_u64(seed: u64) -> Self {
        TorchGenerator::new(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::TorchGenerator;
    use rand_core::Rng;

    /// The same MT19937 values as `std::mt19937(5489)` (libstdc++).
    #[test]
    fn rng_trait_exposes_the_raw_engine_stream() {
        let mut generator = TorchGenerator::new(5489);
        assert_eq!(generator.next_u32(), 3_499_211_612);
        assert_eq!(generator.next_u64(), (581_869_302u64 << 32) | 3_890_346_734);
        let mut bytes = [0u8; 6];
        generator.fill_bytes(&mut bytes);
        assert_eq!(bytes[..4], 3_586_334_585u32.to_le_bytes());
        assert_eq!(bytes[4..], 545_404_204u32.to_le_bytes()[..2]);
    }

    #[test]
    fn only_the_low_32_bits_of_the_seed_reach_the_engine() {
        let mut high = TorchGenerator::new((1 << 32) + 7);
        let mut low = TorchGenerator::new(7);
        assert_eq!(high.initial_seed(), (1 << 32) + 7);
        assert_eq!(high.next_u64(), low.next_u64());
    }
}
