//! Stride-1 3×3 convolution by Winograd's minimal filtering F(m×m, 3×3): each m×m block of
//! output positions (a *tile*) is computed from the (m+2)×(m+2) input patch under it with
//! (m+2)² multiplies per (input, output) channel pair instead of the 9·m² of the direct
//! product: F(2×2, 3×3) does 2.25× fewer, F(4×4, 3×3) 4× fewer.
//!
//! With `g` a 3×3 filter, `d` the input patch under a tile and `⊙` the element-wise product,
//! the tile's outputs are `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2015; the matrices are in [`F2x2`] and [`F4x4`]).
//!
//! Summed over input channels, each of the (m+2)² positions `ξ` of a transformed tile is a
//! matrix product `M_ξ [o, tiles] = U_ξ [o, c] · V_ξ [c, tiles]`, run on the GEMM engine:
//! `U = G g Gᵀ` (the filter transform, done per call rather than kept from load: it is
//! (m+2)²/9 of the weight, which kept for every layer would grow the resident memory by more
//! than the conv weights' size; where all tiles fit one panel it is made a block of output
//! channels at a time, so a conv adds at most [`U_BLOCK_BYTES`] of it), `V = Bᵀ d B` (the input
//! transform), then the output transform `Aᵀ M A` (+ bias). The transforms are plain loops
//! code-generated again for AVX2 / AVX-512 ([`vectorized`](super::elementwise::vectorized)):
//! at the baseline's SSE2 the filter transform alone took 60 % of a 1280-channel F(4×4) conv at
//! 16×16.
//!
//! **Which tile size.** F(4×4) does 44 % fewer multiplies than F(2×2) and moves fewer
//! transformed values per output (36/16 against 16/4), but its transforms have larger
//! coefficients (up to 8 in `Aᵀ`, 1/24 in `G`), so its results carry more rounding: against the
//! f64 direct sum on SD's channel counts (the `winograd_accuracy` test below), F(2×2) stays
//! within 1.1e-7 of each output's scale Σ|x·w|, F(4×4) within 1.8e-6 — both far inside the
//! ops' 1e-4 tolerance, and every golden still passes. Speed, against im2col + GEMM on the
//! 2-core Zen 3 (the `winograd_speed` test below, medians of 9): UNet [2, 320, 64²] 2.5×
//! (F(2×2): 1.6×), [2, 640, 32²] 2.0× (1.5×), [1, 640, 32²] 2.0×; VAE [1, 512, 128²] 2.6×,
//! [1, 128, 512²] 1.9× (1.3×). F(4×4) wins from 64 tiles; below that (SD's 16×16 and 8×8
//! latents) its filter transform, done per call, weighs more than its saving, and F(2×2),
//! whose transform is 16/36 of F(4×4)'s, takes over down to 32 tiles: [2, 1280, 16²] 1.70×
//! (F(4×4): 1.51×), [1, 1280, 16²] 1.24×, [2, 1280, 8²] 1.09×. Below 32 tiles the direct
//! product stays. `SD_WINOGRAD=2` allows only F(2×2), for A/B runs.
//!
//! The tiles (all images' tile rows, in order) are cut into panels whose transformed inputs
//! take a few MiB. Each panel is done in three parallel passes: the input transform over
//! channels, the (m+2)² products over positions, the output transform over output channels.
//! Splitting each pass (rather than giving each task a panel of its own) keeps the products
//! wide on small images, where a panel per thread would leave a few dozen tiles per product.

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::allocator::repeated;
use super::bf16::PairPanels;
use super::gemm::{Parallelism, sgemm};
use crate::error::{Error, Result};
use crate::shapes::ConvShape;

/// The tile sizes implemented here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileSize {
    /// F(2×2, 3×3).
    F2,
    /// F(4×4, 3×3).
    F4,
}

/// One of Winograd's minimal filtering algorithms F(m×m, 3×3): its tile size and its three
/// transform matrices, row-major, with n = m + 2. Implemented by a type per tile size so that
/// the transforms are compiled with their coefficients as constants (the zeros skipped, the
/// ones not multiplied).
trait Minimal {
    /// Output positions per tile side.
    const M: usize;
    /// Input positions per tile side, m + 2.
    const N: usize;
    /// `Bᵀ` (n × n): the input transform. Small integers, exact in f32.
    const BT: &'static [f32];
    /// `G` (n × 3): the filter transform, applied in f64 (it has thirds and twenty-fourths).
    const G: &'static [f64];
    /// `Aᵀ` (m × n): the output transform. Small integers, exact in f32.
    const AT: &'static [f32];
    /// Positions of a transformed tile: one product each.
    const POSITIONS: usize = Self::N * Self::N;
}

/// F(2×2, 3×3), interpolation points 0, ±1 and ∞.
struct F2x2;

impl Minimal for F2x2 {
    const M: usize = 2;
    const N: usize = 4;
    #[rustfmt::skip]
    const BT: &'static [f32] = &[
        1.0,  0.0, -1.0,  0.0,
        0.0,  1.0,  1.0,  0.0,
        0.0, -1.0,  1.0,  0.0,
        0.0,  1.0,  0.0, -1.0,
    ];
    #[rustfmt::skip]
    const G: &'static [f64] = &[
        1.0,  0.0, 0.0,
        0.5,  0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0,  0.0, 1.0,
    ];
    #[rustfmt::skip]
    const AT: &'static [f32] = &[
        1.0, 1.0,  1.0,  0.0,
        0.0, 1.0, -1.0, -1.0,
    ];
}

/// F(4×4, 3×3), interpolation points 0, ±1, ±2 and ∞.
struct F4x4;

impl Minimal for F4x4 {
    const M: usize = 4;
    const N: usize = 6;
    #[rustfmt::skip]
    const BT: &'static [f32] = &[
        4.0,  0.0, -5.0,  0.0, 1.0, 0.0,
        0.0, -4.0, -4.0,  1.0, 1.0, 0.0,
        0.0,  4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0,  2.0, 1.0, 0.0,
        0.0,  2.0, -1.0, -2.0, 1.0, 0.0,
        0.0,  4.0,  0.0, -5.0, 0.0, 1.0,
    ];
    #[rustfmt::skip]
    const G: &'static [f64] = &[
        1.0 / 4.0,   0.0,         0.0,
        -1.0 / 6.0,  -1.0 / 6.0,  -1.0 / 6.0,
        -1.0 / 6.0,  1.0 / 6.0,   -1.0 / 6.0,
        1.0 / 24.0,  1.0 / 12.0,  1.0 / 6.0,
        1.0 / 24.0,  -1.0 / 12.0, 1.0 / 6.0,
        0.0,         0.0,         1.0,
    ];
    #[rustfmt::skip]
    const AT: &'static [f32] = &[
        1.0, 1.0,  1.0, 1.0,  1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0,  1.0, 4.0,  4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ];
}

/// Target size of one panel's transformed input ((m+2)² · c · tiles floats): large enough that
/// each product has a few hundred tiles on SD's layers, small enough to stay in L3.
const PANEL_BYTES: usize = 8 << 20;
/// Target size of one block of the filter transform `U` when it is made block by block (see
/// `conv2d_by`): it bounds the transient memory a conv adds, and the block is still in L3 when
/// its products read it.
const U_BLOCK_BYTES: usize = 16 << 20;
/// Tiles (over all images) from which each algorithm beats the direct product: with fewer,
/// the filter transform (per call, its cost against the products' is 1/tiles) and narrow
/// products outweigh the saving. Measured with the `winograd_speed` test below: F(4×4) 1.95×
/// at 64 tiles ([1, 640, 32²]), 1.51× at 32 where F(2×2) (128 tiles) does 1.70×, 0.89× at 16;
/// F(2×2) 1.24× at 64 tiles, 1.09× at 32 ([2, 1280, 8²]), 0.57× at 16.
const MIN_TILES_F2: usize = 32;
const MIN_TILES_F4: usize = 64;
/// The same against the bf16 engine's direct product (weights packed for `VDPBF16PS`), twice
/// the f32 engine's speed: Winograd (on the f32 engine, see [`Filters::Bf16`]) takes only
/// F(4×4), from more tiles. Measured with `winograd_speed` on a Zen 4 (two runs): VAE
/// [1, 512, 128²] (1024 tiles) 1.56×, [1, 256, 256²] 1.47×, [1, 512, 64²] (256 tiles) 1.12×,
/// UNet [2, 320, 64²] (512 tiles) 1.12×; [2, 640, 32²] (128 tiles) 0.95–1.09×, [1, 640, 32²]
/// (64 tiles) 0.85×; F(2×2) gained nowhere ([2, 1280, 16²] 0.74–1.05×, [2, 1280, 8²] 0.59×).
const MIN_TILES_F4_AGAINST_BF16: usize = 256;
/// The same against AMX's direct product (weights in row tiles), 2–3× the f32 engine's speed:
/// F(4×4) only, from this many tiles and [`MIN_CHANNELS_AGAINST_AMX`] channels. Measured with
/// `winograd_speed` on an Intel Xeon: F(4×4) against the AMX product 1.28× at VAE [1, 512,
/// 128²] (1024 tiles), 1.12× at [1, 256, 256²]; 0.95× at [1, 128, 512²] (fewer channels),
/// 0.85× at [1, 512, 64²] (256 tiles), UNet [2, 320, 64²] 0.87×, [2, 640, 32²] 0.70×, and
/// F(2×2) at most 0.96×.
const MIN_TILES_F4_AGAINST_AMX: usize = 1024;
const MIN_CHANNELS_AGAINST_AMX: usize = 256;
/// Channels below which the transforms (memory passes, not products) dominate.
const MIN_CHANNELS: usize = 32;

/// `off` (or `0`) keeps the convs on im2col + GEMM: the "before" of an A/B or a profile in one
/// binary (`SD_WINOGRAD=off sd bench --profile`); `2` allows only F(2×2, 3×3).
const WINOGRAD_ENV: &str = "SD_WINOGRAD";

/// Which tile sizes `SD_WINOGRAD` allows (read once), largest first.
fn allowed() -> &'static [TileSize] {
    static ALLOWED: std::sync::OnceLock<&'static [TileSize]> = std::sync::OnceLock::new();
    ALLOWED.get_or_init(|| {
        if super::features::switched_off(WINOGRAD_ENV) {
            &[]
        } else if std::env::var(WINOGRAD_ENV).as_deref() == Ok("2") {
            &[TileSize::F2]
        } else {
            &[TileSize::F4, TileSize::F2]
        }
    })
}

/// The tile size the conv `g` with filters `w` takes, if any: 3×3, stride 1, enough channels,
/// and the largest tile size (among those `SD_WINOGRAD` allows) with enough tiles to gain
/// against the direct product `w` would otherwise run on.
pub(crate) fn choose(g: &ConvShape, w: Filters<'_>) -> Option<TileSize> {
    let shape_fits = g.kernel_h == 3
        && g.kernel_w == 3
        && g.params.stride == 1
        && g.channels >= MIN_CHANNELS
        && g.out_channels >= MIN_CHANNELS;
    let enough_tiles = |tile: TileSize| match (tile, w.direct_product()) {
        (TileSize::F2, DirectProduct::F32Engine) => Tiles::of::<F2x2>(g).count() >= MIN_TILES_F2,
        (TileSize::F4, DirectProduct::F32Engine) => Tiles::of::<F4x4>(g).count() >= MIN_TILES_F4,
        // Against the bf16 kernels F(2×2) gained nowhere.
        (TileSize::F2, DirectProduct::Vdpbf16ps | DirectProduct::Amx) => false,
        (TileSize::F4, DirectProduct::Vdpbf16ps) => {
            Tiles::of::<F4x4>(g).count() >= MIN_TILES_F4_AGAINST_BF16
        }
        (TileSize::F4, DirectProduct::Amx) => {
            g.channels >= MIN_CHANNELS_AGAINST_AMX
                && Tiles::of::<F4x4>(g).count() >= MIN_TILES_F4_AGAINST_AMX
        }
    };
    allowed()
        .iter()
        .copied()
        .find(|&tile| shape_fits && enough_tiles(tile))
}

/// `out [n, o, ho, wo] = conv(x [n, c, h, w], w [o, c, 3, 3]) + bias` by F(m×m, 3×3), stride 1,
/// for any padding. `out` must hold `n · o · ho · wo` floats; every one is written.
pub(crate) fn conv2d(
    tile: TileSize,
    g: &ConvShape,
    x: &[f32],
    w: Filters<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    conv2d_with_blocks(tile, g, x, w, bias, out, U_BLOCK_BYTES)
}

/// [`conv2d`] with blocks of `U` of about `u_block_bytes` (the tests make them small, to have
/// many).
fn conv2d_with_blocks(
    tile: TileSize,
    g: &ConvShape,
    x: &[f32],
    w: Filters<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    u_block_bytes: usize,
) -> Result<()> {
    let (o, c) = (g.out_channels, g.channels);
    if g.kernel_h != 3 || g.kernel_w != 3 || g.params.stride != 1 {
        return Err(Error::shape(
            "winograd conv2d",
            format!("needs a 3×3 stride-1 conv, got {g:?}"),
        ));
    }
    let filters_fit = match w {
        Filters::F32(w) => w.len() >= o * c * 9,
        Filters::Bf16(w) => w.rows() == o && w.k() == c * 9,
    };
    if x.len() < g.images * c * g.in_h * g.in_w
        || !filters_fit
        || out.len() < g.images * o * g.out_h * g.out_w
    {
        return Err(Error::shape(
            "winograd conv2d",
            format!("buffers too short for {g:?}"),
        ));
    }
    match tile {
        TileSize::F2 => conv2d_by::<F2x2>(g, x, w, bias, out, u_block_bytes),
        TileSize::F4 => conv2d_by::<F4x4>(g, x, w, bias, out, u_block_bytes),
    }
}

/// [`conv2d`] past its checks.
fn conv2d_by<F: Minimal>(
    g: &ConvShape,
    x: &[f32],
    w: Filters<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    u_block_bytes: usize,
) -> Result<()> {
    let (o, c) = (g.out_channels, g.channels);
    let tiles = Tiles::of::<F>(g);
    let row_bytes = F::POSITIONS * c.max(o) * tiles.across * std::mem::size_of::<f32>();
    let u_channel_bytes = F::POSITIONS * c * std::mem::size_of::<f32>();
    // All tiles in one panel when its buffers (V and M) take no more than U would whole; U is
    // then transformed a block of output channels at a time, just before that block's
    // products: whole, a 2560 → 1280 conv's U in F(4×4) is 472 MB, which raised the UNet's
    // peak memory by 6 %. With several panels each needs all of U, so it is transformed once,
    // whole (the layers with that many tiles have few channels: 59 MB at most in SD).
    let all_rows_bytes = row_bytes.saturating_mul(tiles.rows());
    let rows_per_panel = if all_rows_bytes <= PANEL_BYTES.max(u_channel_bytes.saturating_mul(o)) {
        tiles.rows().max(1)
    } else {
        (PANEL_BYTES / row_bytes.max(1)).clamp(1, tiles.rows().max(1))
    };
    let panel_tiles = rows_per_panel * tiles.across;
    let block_channels = if tiles.rows() <= rows_per_panel {
        let channels = (u_block_bytes / u_channel_bytes.max(1)).clamp(1, o.max(1));
        // Whole panels of filters per block where it holds one (see `filter_transform`).
        match w.channels_per_panel() {
            panel if channels >= panel => channels - channels % panel,
            _ => channels,
        }
    } else {
        o.max(1)
    };
    let terms = filter_terms::<F>();
    // Every value of these is written before it is read (`repeated` fills them in parallel
    // rather than having calloc clear them on one thread).
    let mut u = repeated(F::POSITIONS * c * block_channels, &[]);
    let u_whole = block_channels >= o;
    if u_whole {
        filter_transform::<F>(&terms, w, 0..o, c, &mut u);
    }
    let mut v = repeated(F::POSITIONS * c * panel_tiles, &[]);
    let mut m = repeated(F::POSITIONS * block_channels * panel_tiles, &[]);
    let image_out = o * g.out_h * g.out_w;
    let out = SharedMut(out.as_mut_ptr());
    for first in (0..tiles.rows()).step_by(rows_per_panel) {
        let rows = first..(first + rows_per_panel).min(tiles.rows());
        let count = rows.len() * tiles.across;
        let v = &mut v[..F::POSITIONS * c * count];
        // V [ξ, c, count]: one input channel per task, each writing its own row of every V_ξ.
        let v_rows = SharedMut(v.as_mut_ptr());
        (0..c).into_par_iter().for_each_init(
            || InputRows::new::<F>(&tiles, count),
            |buffers, ci| {
                super::elementwise::vectorized(
                    #[inline(always)]
                    || {
                        buffers.transform::<F>(g, &tiles, x, ci, rows.clone(), |xi| {
                            // SAFETY: row ci of V_ξ lies inside `v` (ξ < n², ci < c), and only
                            // this task writes it.
                            unsafe { v_rows.slice((xi * c + ci) * count, count) }
                        });
                    },
                );
            },
        );
        let v = &*v;
        for first_channel in (0..o).step_by(block_channels) {
            let channels = first_channel..(first_channel + block_channels).min(o);
            let ob = channels.len();
            if !u_whole {
                filter_transform::<F>(&terms, w, channels.clone(), c, &mut u);
            }
            let u = &u[..];
            let m = &mut m[..F::POSITIONS * ob * count];
            // M_ξ = U_ξ · V_ξ: one position per task.
            m.par_chunks_exact_mut(ob * count)
                .zip(v.par_chunks_exact(c * count))
                .enumerate()
                .try_for_each(|(k, (mk, vk))| {
                    // U_ξ: rows of u n²·c apart (u is [o, n², c]).
                    let uk = ArrayView2::from_shape(
                        ndarray::ShapeBuilder::strides((ob, c), (F::POSITIONS * c, 1)),
                        &u[k * c..],
                    )
                    .map_err(|e| Error::shape("winograd U", e.to_string()))?;
                    let vk = ArrayView2::from_shape((c, count), vk)
                        .map_err(|e| Error::shape("winograd V", e.to_string()))?;
                    let mk = ArrayViewMut2::from_shape((ob, count), mk)
                        .map_err(|e| Error::shape("winograd M", e.to_string()))?;
                    sgemm(1.0, uk, vk, 0.0, mk, Parallelism::Serial)
                })?;
            // Output rows: one output channel per task.
            let m = &*m;
            channels.into_par_iter().for_each_init(
                || OutputRows::new::<F>(&tiles, count),
                |buffers, oc| {
                    let b = bias.map_or(0.0, |b| b[oc]);
                    let row = oc - first_channel;
                    let m_of = |xi: usize| &m[(xi * ob + row) * count..(xi * ob + row + 1) * count];
                    let row_out = |image: usize, oy: usize| {
                        let at = image * image_out + (oc * g.out_h + oy) * g.out_w;
                        // SAFETY: `at..at + wo` lies inside `out` (image < n, oc < o, oy < ho:
                        // checked lengths in `conv2d`), and only this task writes channel oc.
                        unsafe { out.slice(at, g.out_w) }
                    };
                    super::elementwise::vectorized(
                        #[inline(always)]
                        || buffers.transform::<F>(g, &tiles, m_of, rows.clone(), b, row_out),
                    );
                },
            );
        }
    }
    Ok(())
}

/// A buffer's base pointer, shared by tasks that write disjoint runs of it.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: tasks write disjoint runs through it (see `conv2d_by`), and the buffer outlives them.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    /// # Safety
    /// `at..at + len` must lie inside the buffer, and no other task may touch it meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// The tiling of the output: per image, `down × across` tiles of m×m positions (the last row
/// or column partial when m does not divide ho or wo). Tile rows are numbered over all images
/// (image · down + row).
struct Tiles {
    images: usize,
    down: usize,
    across: usize,
    /// Width of a zero-padded input row: the m + 2 columns under every tile.
    padded_w: usize,
}

impl Tiles {
    fn of<F: Minimal>(g: &ConvShape) -> Tiles {
        let across = g.out_w.div_ceil(F::M);
        Tiles {
            images: g.images,
            down: g.out_h.div_ceil(F::M),
            across,
            padded_w: F::M * across + 2,
        }
    }

    /// Tile rows over all images.
    fn rows(&self) -> usize {
        self.images * self.down
    }

    /// Tiles over all images.
    fn count(&self) -> usize {
        self.rows() * self.across
    }

    /// (image, tile row in it) of global tile row `r`.
    fn locate(&self, r: usize) -> (usize, usize) {
        (r / self.down, r % self.down)
    }
}

/// A conv weight `[o, c, 3, 3]` as the filter transform reads it.
#[derive(Clone, Copy)]
pub(crate) enum Filters<'a> {
    F32(&'a [f32]),
    /// bf16, in plain rows (a CPU without bf16 arithmetic) or in the bf16 engine's pair panels:
    /// each output channel's filters are widened as the transform reaches them, so the f32
    /// weight never exists whole. The products stay on the f32 engine either way: with `U` and
    /// `V` rounded to bf16 for the bf16 engine (tried, on a Zen 4), F(4×4)'s results were off
    /// by up to 8e-2 of each output's scale Σ|x·w| (F(2×2): 8e-3; the direct bf16 product
    /// rounds x only, at most 2e-3), too far for its speed: 1.3–1.6× F(4×4) on the f32 engine
    /// on the VAE's large layers, no faster on the UNet's, where the transforms take a third
    /// to a half of the time.
    Bf16(&'a PairPanels),
}

/// The kernels a conv's direct product runs on (see [`choose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirectProduct {
    /// f32 weights, or bf16 plain rows widened for it.
    F32Engine,
    /// bf16 weights in MR pair panels.
    Vdpbf16ps,
    /// bf16 weights in row tiles.
    Amx,
}

impl Filters<'_> {
    /// The direct product these filters would otherwise run on, which Winograd competes with:
    /// their packing says.
    fn direct_product(self) -> DirectProduct {
        match self {
            Filters::Bf16(w) if w.width() == super::bf16::MR => DirectProduct::Vdpbf16ps,
            Filters::Bf16(w) if w.width() == super::bf16::ROW_TILES => DirectProduct::Amx,
            Filters::Bf16(_) | Filters::F32(_) => DirectProduct::F32Engine,
        }
    }

    /// Output channels stored together: a pair panel's rows, else one.
    fn channels_per_panel(self) -> usize {
        match self {
            Filters::Bf16(w) => w.width(),
            Filters::F32(_) => 1,
        }
    }
}

/// `out = Σ_k coefs[k] · input(k)` over runs of `out.len()` values, the zero coefficients
/// skipped. Inlined so that constant coefficients fold into the loops.
#[inline(always)]
fn combine<'a>(coefs: &[f32], input: impl Fn(usize) -> &'a [f32], out: &mut [f32]) {
    let mut written = false;
    for (k, &a) in coefs.iter().enumerate() {
        if a == 0.0 {
            continue;
        }
        let x = &input(k)[..out.len()];
        if written {
            out.iter_mut().zip(x).for_each(|(o, &x)| *o += a * x);
        } else {
            out.iter_mut().zip(x).for_each(|(o, &x)| *o = a * x);
            written = true;
        }
    }
    if !written {
        out.fill(0.0);
    }
}

/// `terms[ξ]`: the nonzero (tap, coefficient) pairs of row ξ of `T = G ⊗ G`, for
/// [`filter_transform`] (made once per conv, not per block of `U`).
fn filter_terms<F: Minimal>() -> Vec<Vec<(usize, f32)>> {
    (0..F::POSITIONS)
        .map(|xi| {
            let (i, j) = (xi / F::N, xi % F::N);
            (0..9)
                .map(|t| (t, (F::G[3 * i + t / 3] * F::G[3 * j + t % 3]) as f32))
                .filter(|&(_, coef)| coef != 0.0)
                .collect()
        })
        .collect()
}

/// Input channels per step of the filter transform: their nine taps stay in registers (as
/// 16 lanes: two AVX2 vectors or one AVX-512 vector) while all n² values of `U` are made.
const FILTER_LANES: usize = 16;

/// `U [o, n², c]` for the output channels `channels` of `w [o, c, 3, 3]`, into `u` (its
/// `channels.len() · n² · c` values): `G g Gᵀ` per filter, one output channel per task, as
/// `U_ξ = Σ_t T[ξ][t] · g_t` with `T = G ⊗ G` (the n² × 9 matrix of `G[i][a] · G[j][b]`,
/// computed in f64 and rounded once) and `g_t` the t-th tap of each filter. Each task takes
/// [`FILTER_LANES`] input channels at a time and writes each value of `U` once: a first version
/// (one pass over all input channels per term of `T`, at SSE2's 4 lanes) took 60 % of a
/// 1280-channel F(4×4) conv at 16×16.
fn filter_transform<F: Minimal>(
    terms: &[Vec<(usize, f32)>],
    w: Filters<'_>,
    channels: std::ops::Range<usize>,
    c: usize,
    u: &mut [f32],
) {
    if c == 0 {
        return;
    }
    // Pair panels are widened a panel of output channels per task (read in storage order).
    let group = w.channels_per_panel();
    let per_channel = F::POSITIONS * c;
    u[..channels.len() * per_channel]
        .par_chunks_mut(group * per_channel)
        .enumerate()
        .for_each_init(Vec::new, |widened, (i, u)| {
            let (first, count) = (channels.start + i * group, u.len() / per_channel);
            let filters = match w {
                Filters::F32(w) => &w[first * 9 * c..(first + count) * 9 * c],
                Filters::Bf16(w) => {
                    widened.resize(count * 9 * c, 0.0);
                    w.widen_rows(first, widened);
                    &widened[..]
                }
            };
            super::elementwise::vectorized(
                #[inline(always)]
                || {
                    for (filters, u) in filters
                        .chunks_exact(9 * c)
                        .zip(u.chunks_exact_mut(per_channel))
                    {
                        transform_filters(terms, filters, c, u);
                    }
                },
            );
        });
}

/// One output channel's part of [`filter_transform`]: `filters [c, 9]` into `u [n², c]`.
#[inline(always)]
fn transform_filters(terms: &[Vec<(usize, f32)>], filters: &[f32], c: usize, u: &mut [f32]) {
    const L: usize = FILTER_LANES;
    let whole = c - c % L;
    for first in (0..whole).step_by(L) {
        let Ok(chunk) = <&[f32; 9 * L]>::try_from(&filters[first * 9..(first + L) * 9]) else {
            continue;
        };
        let taps = tap_chunk(chunk);
        for (xi, terms) in terms.iter().enumerate() {
            // Stored as an array: vector stores, not a memcpy call per chunk.
            if let Ok(dst) = <&mut [f32; L]>::try_from(&mut u[xi * c + first..][..L]) {
                *dst = weighted_taps(terms, &taps);
            }
        }
    }
    if whole < c {
        let mut padded = [0.0f32; 9 * L];
        padded[..(c - whole) * 9].copy_from_slice(&filters[whole * 9..c * 9]);
        let taps = tap_chunk(&padded);
        for (xi, terms) in terms.iter().enumerate() {
            u[xi * c + whole..][..c - whole]
                .copy_from_slice(&weighted_taps(terms, &taps)[..c - whole]);
        }
    }
}

/// `taps[t][l]`: tap t of the l-th of [`FILTER_LANES`] filters of 9 values.
#[inline(always)]
fn tap_chunk(filters: &[f32; 9 * FILTER_LANES]) -> [[f32; FILTER_LANES]; 9] {
    let mut taps = [[0.0f32; FILTER_LANES]; 9];
    for l in 0..FILTER_LANES {
        for (t, tap) in taps.iter_mut().enumerate() {
            tap[l] = filters[l * 9 + t];
        }
    }
    taps
}

/// `Σ coef · taps[t]` over the (tap, coefficient) terms of one row of `T`, lane by lane.
#[inline(always)]
fn weighted_taps(terms: &[(usize, f32)], taps: &[[f32; FILTER_LANES]; 9]) -> [f32; FILTER_LANES] {
    let mut sum = [0.0f32; FILTER_LANES];
    for &(t, coef) in terms {
        for (s, &g) in sum.iter_mut().zip(&taps[t]) {
            *s += coef * g;
        }
    }
    sum
}

/// One task's buffers for the input transform: per run, one value for each tile of a panel.
struct InputRows {
    /// One zero-padded input row.
    padded: Vec<f32>,
    /// `d[a][b]` of every tile (the patch under it): n² runs.
    patches: Vec<f32>,
    /// `Bᵀ d` of every tile: n² runs.
    half: Vec<f32>,
}

impl InputRows {
    fn new<F: Minimal>(tiles: &Tiles, count: usize) -> InputRows {
        InputRows {
            padded: vec![0.0; tiles.padded_w],
            patches: vec![0.0; F::POSITIONS * count],
            half: vec![0.0; F::POSITIONS * count],
        }
    }

    /// `Bᵀ d B` of input channel `ci` for each tile of the tile rows `rows` (`d` the patch
    /// under the tile, zeros in the padding): position ξ of every tile, in tile order, into
    /// `row_of(ξ)`. Inlined into its caller's [`vectorized`](super::elementwise::vectorized)
    /// code generation.
    #[inline(always)]
    fn transform<'v, F: Minimal>(
        &mut self,
        g: &ConvShape,
        tiles: &Tiles,
        x: &[f32],
        ci: usize,
        rows: std::ops::Range<usize>,
        row_of: impl Fn(usize) -> &'v mut [f32],
    ) {
        let (n, across) = (F::N, tiles.across);
        let count = rows.len() * across;
        let (c, pad, plane) = (g.channels, g.params.padding, g.in_h * g.in_w);
        for (r, global) in rows.enumerate() {
            let (image, ty) = tiles.locate(global);
            let channel = &x[(image * c + ci) * plane..(image * c + ci + 1) * plane];
            for a in 0..n {
                // Padded row m·ty + a is input row m·ty + a − pad; d[a][b] of tile tx is its
                // column m·tx + b.
                padded_row(
                    channel,
                    g,
                    (F::M * ty + a).checked_sub(pad),
                    pad,
                    &mut self.padded,
                );
                for b in 0..n {
                    let run = &mut self.patches[(a * n + b) * count + r * across..][..across];
                    for (dst, &value) in run.iter_mut().zip(self.padded[b..].iter().step_by(F::M)) {
                        *dst = value;
                    }
                }
            }
        }
        // (Bᵀ d)[i][b] = Σ_a Bᵀ[i][a] · d[a][b].
        let patches = &self.patches[..F::POSITIONS * count];
        for (e, out) in self.half.chunks_exact_mut(count).enumerate() {
            let (i, b) = (e / n, e % n);
            combine(
                &F::BT[i * n..(i + 1) * n],
                |a| &patches[(a * n + b) * count..],
                out,
            );
        }
        // (Bᵀ d B)[i][j] = Σ_b (Bᵀ d)[i][b] · Bᵀ[j][b].
        let half = &self.half[..F::POSITIONS * count];
        for xi in 0..F::POSITIONS {
            let (i, j) = (xi / n, xi % n);
            combine(
                &F::BT[j * n..(j + 1) * n],
                |b| &half[(i * n + b) * count..],
                row_of(xi),
            );
        }
    }
}

/// Fill `prow` (a zero-padded row, `prow[x]` = input column `x − pad`) from input row `iy`
/// (`None` or past the image: all zeros).
#[inline(always)]
fn padded_row(channel: &[f32], g: &ConvShape, iy: Option<usize>, pad: usize, prow: &mut [f32]) {
    let Some(iy) = iy.filter(|&iy| iy < g.in_h) else {
        prow.fill(0.0);
        return;
    };
    let row = &channel[iy * g.in_w..(iy + 1) * g.in_w];
    let start = pad.min(prow.len());
    let end = (pad + g.in_w).min(prow.len());
    prow[..start].fill(0.0);
    prow[start..end].copy_from_slice(&row[..end - start]);
    prow[end..].fill(0.0);
}

/// One task's buffers for the output transform: per run, one value for each tile of a panel.
struct OutputRows {
    /// `Aᵀ M` of every tile: m × n runs.
    half: Vec<f32>,
    /// `Aᵀ M A` + bias of every tile: m × m runs (output row i, column p of each tile).
    outputs: Vec<f32>,
    /// One output row, before clipping to wo.
    line: Vec<f32>,
}

impl OutputRows {
    fn new<F: Minimal>(tiles: &Tiles, count: usize) -> OutputRows {
        OutputRows {
            half: vec![0.0; F::M * F::N * count],
            outputs: vec![0.0; F::M * F::M * count],
            line: vec![0.0; F::M * tiles.across],
        }
    }

    /// Output rows of one channel for the tile rows `rows`, `m_of(ξ)` being that channel's row
    /// of `M_ξ` (one value per tile of the panel): `Aᵀ M A` per tile plus the bias `b`, written
    /// into `row_of(image, output row)` (its `wo` values). Inlined as the input transform is.
    #[inline(always)]
    fn transform<'m, 'o, F: Minimal>(
        &mut self,
        g: &ConvShape,
        tiles: &Tiles,
        m_of: impl Fn(usize) -> &'m [f32],
        rows: std::ops::Range<usize>,
        b: f32,
        row_of: impl Fn(usize, usize) -> &'o mut [f32],
    ) {
        let (n, across) = (F::N, tiles.across);
        let count = rows.len() * across;
        // (Aᵀ M)[i][j] = Σ_k Aᵀ[i][k] · M[k][j].
        for (e, out) in self.half.chunks_exact_mut(count).enumerate() {
            let (i, j) = (e / n, e % n);
            combine(&F::AT[i * n..(i + 1) * n], |k| m_of(k * n + j), out);
        }
        // (Aᵀ M A)[i][p] = Σ_j (Aᵀ M)[i][j] · Aᵀ[p][j], plus the bias.
        let half = &self.half[..F::M * n * count];
        for (e, out) in self.outputs.chunks_exact_mut(count).enumerate() {
            let (i, p) = (e / F::M, e % F::M);
            combine(
                &F::AT[p * n..(p + 1) * n],
                |j| &half[(i * n + j) * count..],
                out,
            );
            out.iter_mut().for_each(|v| *v += b);
        }
        for (r, global) in rows.enumerate() {
            let (image, ty) = tiles.locate(global);
            for i in 0..F::M {
                let oy = F::M * ty + i;
                if oy >= g.out_h {
                    break;
                }
                // Column m·tx + p of the row is output p of tile tx.
                for p in 0..F::M {
                    let run = &self.outputs[(i * F::M + p) * count + r * across..][..across];
                    for (dst, &value) in self.line[p..].iter_mut().step_by(F::M).zip(run) {
                        *dst = value;
                    }
                }
                row_of(image, oy).copy_from_slice(&self.line[..g.out_w]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::bf16::tests::random;
    use super::*;
    use crate::backend::Conv2dParams;
    use crate::cpu::bf16::{MR, PLAIN_ROWS};

    /// The transform matrices compute a 1-D correlation of n inputs with a 3-tap filter:
    /// `Aᵀ [(G g) ⊙ (Bᵀ d)] = (Σ_k d[i + k] g[k])_i`, in f64.
    fn check_correlation<F: Minimal>() {
        let n = F::N;
        for seed in 0..4 {
            let d: Vec<f64> = random(n, seed).iter().map(|&v| f64::from(v)).collect();
            let g: Vec<f64> = random(3, seed + 10).iter().map(|&v| f64::from(v)).collect();
            let gg: Vec<f64> = (0..n)
                .map(|i| (0..3).map(|k| F::G[3 * i + k] * g[k]).sum())
                .collect();
            let bd: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|k| f64::from(F::BT[n * i + k]) * d[k]).sum())
                .collect();
            for i in 0..F::M {
                let got: f64 = (0..n)
                    .map(|k| f64::from(F::AT[n * i + k]) * gg[k] * bd[k])
                    .sum();
                let want: f64 = (0..3).map(|k| d[i + k] * g[k]).sum();
                assert!(
                    (got - want).abs() < 1e-12,
                    "F({0}×{0}) [{i}]: {got} vs {want}",
                    F::M
                );
            }
        }
    }

    #[test]
    fn matrices_compute_the_correlation() {
        check_correlation::<F2x2>();
        check_correlation::<F4x4>();
    }

    /// The direct sum in f64, with the scale of each output (Σ |x·w|) for the tolerance.
    fn naive(g: &ConvShape, x: &[f32], w: &[f32], bias: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (c, o, pad) = (g.channels, g.out_channels, g.params.padding as isize);
        let len = g.images * o * g.out_h * g.out_w;
        let (mut sum, mut scale) = (vec![0.0f64; len], vec![0.0f64; len]);
        for n in 0..g.images {
            for oc in 0..o {
                for oy in 0..g.out_h {
                    for ox in 0..g.out_w {
                        let at = ((n * o + oc) * g.out_h + oy) * g.out_w + ox;
                        let (mut s, mut a) = (f64::from(bias[oc]), f64::from(bias[oc]).abs());
                        for ci in 0..c {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let iy = oy as isize + ky as isize - pad;
                                    let ix = ox as isize + kx as isize - pad;
                                    if iy < 0 || ix < 0 {
                                        continue;
                                    }
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    if iy >= g.in_h || ix >= g.in_w {
                                        continue;
                                    }
                                    let xv = x[((n * c + ci) * g.in_h + iy) * g.in_w + ix];
                                    let wv = w[((oc * c + ci) * 3 + ky) * 3 + kx];
                                    s += f64::from(xv) * f64::from(wv);
                                    a += (f64::from(xv) * f64::from(wv)).abs();
                                }
                            }
                        }
                        (sum[at], scale[at]) = (s, a);
                    }
                }
            }
        }
        (sum, scale)
    }

    /// Largest error of `f` on the shape, relative to each output's scale Σ|x·w|, with f32
    /// and with bf16 filters, in plain rows and in pair panels (against the direct sum of their
    /// bf16 values).
    fn worst_relative_error(
        tile: TileSize,
        shape: (usize, usize, usize, usize, usize, usize),
    ) -> f64 {
        let (images, c, o, h, w, padding) = shape;
        let params = Conv2dParams::same(padding);
        let g = ConvShape::check(&[images, c, h, w], &[o, c, 3, 3], Some(&[o]), params)
            .expect("valid shape");
        let x = random(images * c * h * w, 1);
        let wt = random(o * c * 9, 2);
        let bias = random(o, 3);
        let packed = PairPanels::from_rows(&wt, o, 9 * c, PLAIN_ROWS);
        let pairs = PairPanels::from_rows(&wt, o, 9 * c, MR);
        let widened = packed.to_rows();
        let mut worst = 0.0f64;
        let cases = [
            (Filters::F32(&wt), &wt, U_BLOCK_BYTES),
            (Filters::Bf16(&packed), &widened, U_BLOCK_BYTES),
            (Filters::Bf16(&pairs), &widened, U_BLOCK_BYTES),
            // U one output channel at a time (where all tiles fit one panel).
            (Filters::F32(&wt), &wt, 1),
            (Filters::Bf16(&pairs), &widened, 1),
            // Blocks of a few channels: whole pair panels (12 channels) where that many fit.
            (Filters::Bf16(&pairs), &widened, 30_000),
        ];
        for (filters, wt, u_block_bytes) in cases {
            let mut out = vec![f32::NAN; images * o * g.out_h * g.out_w];
            conv2d_with_blocks(tile, &g, &x, filters, Some(&bias), &mut out, u_block_bytes)
                .expect("conv");
            let (want, scale) = naive(&g, &x, wt, &bias);
            for ((&got, &want), &scale) in out.iter().zip(&want).zip(&scale) {
                // NaN (an output never written) fails the comparison below.
                let err = (f64::from(got) - want).abs() / scale.max(1e-3);
                worst = if err.is_nan() {
                    f64::INFINITY
                } else {
                    worst.max(err)
                };
            }
        }
        worst
    }

    /// Odd and even sizes (partial tiles), paddings 0–2, batches of one and two (tile rows of
    /// both images in one panel), one and several panels, `U` whole and by blocks of output
    /// channels, both tile sizes, f32 and bf16 filters (plain rows, pair panels), against the f64
    /// direct sum: within 1e-6 (F(2×2)) and 1e-5 (F(4×4)) of each output's scale Σ|x·w|, twice
    /// the worst measured (5.6e-7 and 4.3e-6, on the few-channel shapes). The direct f32
    /// product's rounding is of the order 1e-7 of it; F(4×4)'s transforms (coefficients up to
    /// 8, filter values divided by 24) add ten times more.
    #[test]
    fn matches_the_direct_sum() {
        for shape in [
            (1, 1, 1, 1, 1, 1),
            (1, 3, 2, 5, 7, 1),
            (2, 4, 5, 6, 6, 0),
            (1, 2, 3, 4, 9, 2),
            (2, 8, 6, 33, 17, 1),
            (3, 5, 4, 10, 11, 1),
            (1, 16, 40, 70, 66, 1),
            (2, 8, 8, 250, 250, 1),
        ] {
            for (tile, tolerance) in [(TileSize::F2, 1e-6), (TileSize::F4, 1e-5)] {
                let err = worst_relative_error(tile, shape);
                assert!(err <= tolerance, "{tile:?} on {shape:?}: {err:e}");
            }
        }
    }

    /// The errors on SD's channel counts, for the module docs:
    /// `cargo test --release -p sd-core --lib winograd_accuracy -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement, not a check (slow: f64 direct sums)"]
    fn winograd_accuracy() {
        for shape in [
            (1, 320, 8, 32, 32, 1),
            (1, 1280, 4, 16, 16, 1),
            (1, 128, 8, 64, 64, 1),
        ] {
            for tile in [TileSize::F2, TileSize::F4] {
                let err = worst_relative_error(tile, shape);
                println!("{tile:?} {shape:?}: worst error / scale {err:.2e}");
            }
        }
    }

    #[test]
    fn refuses_other_kernels_with_a_shape_error() {
        let g = ConvShape::check(&[1, 1, 4, 4], &[1, 1, 1, 1], None, Conv2dParams::same(0))
            .expect("valid shape");
        let mut out = vec![0.0; 16];
        assert!(
            conv2d(
                TileSize::F2,
                &g,
                &[0.0; 16],
                Filters::F32(&[1.0]),
                None,
                &mut out
            )
            .is_err()
        );
        // bf16 filters of another shape than the conv's.
        let g = ConvShape::check(&[1, 1, 4, 4], &[1, 1, 3, 3], None, Conv2dParams::same(1))
            .expect("valid shape");
        let pairs = PairPanels::from_rows(&[1.0; 18], 2, 9, MR);
        assert!(
            conv2d(
                TileSize::F4,
                &g,
                &[0.0; 16],
                Filters::Bf16(&pairs),
                None,
                &mut out
            )
            .is_err()
        );
    }
}

#[cfg(test)]
mod speed {
    use super::super::CpuTensor;
    use super::super::bf16::{PLAIN_ROWS, PairPanels, left_width};
    use super::super::conv::{Algorithm, conv2d_by};
    use super::TileSize;
    use crate::backend::Conv2dParams;
    use std::time::Instant;

    /// F(2×2) and F(4×4) against im2col + GEMM on SD's 3×3 convs (each forced), interleaved,
    /// medians of 9 (and the ratio of the fastest runs): f32 weights, then bf16 weights packed
    /// for this CPU's bf16 kernel (`bf16`: MR panels, or row tiles for AMX) and in plain rows
    /// for the f32 engine (`bf16 plain`):
    /// `cargo test --release -p sd-core --lib winograd_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, not a check"]
    fn winograd_speed() {
        // As in the backend: freed buffers stay mapped (no page faults on every call).
        super::super::allocator::keep_freed_buffers();
        for &(n, c, o, side) in &[
            (2, 320, 320, 64),
            (2, 640, 640, 32),
            (2, 1280, 1280, 16),
            (2, 1280, 1280, 8),
            (1, 640, 640, 32),
            (1, 1280, 1280, 16),
            (1, 1280, 1280, 8),
            (1, 512, 512, 64),
            (1, 512, 512, 128),
            (1, 256, 256, 256),
            (1, 128, 128, 512),
            (2, 64, 64, 64),
        ] {
            let x = CpuTensor::from_vec(&[n, c, side, side], vec![0.5; n * c * side * side])
                .expect("x");
            let values = vec![0.25; o * c * 9];
            let packed = |width| {
                CpuTensor::from_panels(
                    vec![o, c, 3, 3],
                    PairPanels::from_rows(&values, o, c * 9, width),
                )
            };
            let weights = [
                (
                    "f32",
                    CpuTensor::from_vec(&[o, c, 3, 3], values.clone()).expect("w"),
                ),
                ("bf16", packed(left_width())),
                ("bf16 plain", packed(PLAIN_ROWS)),
            ];
            let b = CpuTensor::from_vec(&[o], vec![0.1; o]).expect("b");
            for (name, w) in &weights {
                let time = |algorithm| {
                    let start = Instant::now();
                    conv2d_by(&x, w, Some(&b), Conv2dParams::same(1), algorithm).expect("conv");
                    start.elapsed().as_secs_f64()
                };
                let algorithms = [
                    Algorithm::Direct,
                    Algorithm::Winograd(TileSize::F2),
                    Algorithm::Winograd(TileSize::F4),
                ];
                let mut times = vec![Vec::new(); algorithms.len()];
                for _ in 0..9 {
                    for (t, &a) in times.iter_mut().zip(&algorithms) {
                        t.push(time(a));
                    }
                }
                // Medians, and the fastest runs (on a shared machine the least disturbed).
                let (mut medians, mut fastest) = (Vec::new(), Vec::new());
                for t in &mut times {
                    t.sort_by(f64::total_cmp);
                    medians.push(t[t.len() / 2]);
                    fastest.push(t[0]);
                }
                let column = |i: usize| {
                    format!(
                        "{:.1} ms ({:.2}×, fastest {:.2}×)",
                        medians[i] * 1e3,
                        medians[0] / medians[i],
                        fastest[0] / fastest[i]
                    )
                };
                println!(
                    "{name:>10} [{n},{c},{side},{side}] → {o}: direct {:.1} ms, F(2×2) {}, F(4×4) {}",
                    medians[0] * 1e3,
                    column(1),
                    column(2)
                );
            }
        }
    }
}
