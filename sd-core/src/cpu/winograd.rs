//! Stride-1 3×3 convolution by Winograd's minimal filtering F(2×2, 3×3): each 2×2 block of
//! output positions (a *tile*) costs 16 multiplies per (input, output) channel pair instead of
//! the 36 of the direct product, 2.25× fewer.
//!
//! With `g` a 3×3 filter, `d` the 4×4 input patch under a tile and `⊙` the element-wise product,
//! the tile's 2×2 outputs are `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2015) with
//!
//! ```text
//!       ⎡ 1    0    0  ⎤         ⎡ 1  0 −1  0 ⎤
//!   G = ⎢ 1/2  1/2  1/2⎥    Bᵀ = ⎢ 0  1  1  0 ⎥    Aᵀ = ⎡ 1  1  1  0 ⎤
//!       ⎢ 1/2 −1/2  1/2⎥         ⎢ 0 −1  1  0 ⎥         ⎣ 0  1 −1 −1 ⎦
//!       ⎣ 0    0    1  ⎦         ⎣ 0  1  0 −1 ⎦
//! ```
//!
//! Summed over input channels, each of the 16 positions `ξ` of the transformed 4×4 tile is a
//! matrix product `M_ξ [o, tiles] = U_ξ [o, c] · V_ξ [c, tiles]`, run on the GEMM engine:
//! `U = G g Gᵀ` (the filter transform, done per call rather than kept from load: it is
//! o·c·16 values, 16/9 of the weight, which kept for every layer would grow the resident
//! memory by most of the conv weights' size; per call it costs ~1 % of the products on the
//! layers this path takes), `V = Bᵀ d B` (the input transform), then the output
//! transform `Aᵀ M A` (+ bias). The transforms only add and halve, so the results differ from
//! the direct product only in the order of f32 roundings (see the property tests in
//! `tests/cpu_linalg_ops.rs`).
//!
//! Like im2col in `conv.rs`, the tiles are cut into panels of whole tile rows whose transformed
//! inputs take a few MiB; each rayon task transforms one panel into its own buffers, runs the
//! 16 products serially, and writes its (disjoint) output rows.

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use super::bf16::PairPanels;
use super::gemm::{Parallelism, sgemm};
use crate::error::{Error, Result};
use crate::shapes::ConvShape;

/// Positions of a transformed 4×4 tile.
const POSITIONS: usize = 16;
/// Target size of one panel's transformed input (16 · c · tiles floats): like conv.rs's im2col
/// panels, a few MiB, so the products are large enough to run at full speed.
const PANEL_BYTES: usize = 4 << 20;
/// Tiles per image below which the direct product stays faster: small images have too few
/// tiles for 16 separate products of full speed (SD's 8×8 and 16×16 latents stay direct).
/// Measured with the `winograd_speed` test below.
const MIN_TILES: usize = 256;
/// Channels below which the transforms (memory passes, not products) dominate.
const MIN_CHANNELS: usize = 32;

/// Set to `off` (or `0`), the convs stay on im2col + GEMM: the "before" of an A/B or a profile
/// in one binary (`SD_WINOGRAD=off sd bench --profile`).
const WINOGRAD_ENV: &str = "SD_WINOGRAD";

/// Whether `SD_WINOGRAD` leaves this path on (read once).
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| !super::features::switched_off(WINOGRAD_ENV))
}

/// Whether the conv `g` takes this path: 3×3, stride 1, large enough to gain, and not turned
/// off by `SD_WINOGRAD`.
pub(crate) fn applies(g: &ConvShape) -> bool {
    enabled()
        && g.kernel_h == 3
        && g.kernel_w == 3
        && g.params.stride == 1
        && g.channels >= MIN_CHANNELS
        && g.out_channels >= MIN_CHANNELS
        && g.out_h.div_ceil(2) * g.out_w.div_ceil(2) >= MIN_TILES
}

/// `out [n, o, ho, wo] = conv(x [n, c, h, w], w [o, c, 3, 3]) + bias`, stride 1, for any
/// padding. `out` must hold `n · o · ho · wo` floats; every one is written.
pub(crate) fn conv2d(
    g: &ConvShape,
    x: &[f32],
    w: Filters<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let (o, c) = (g.out_channels, g.channels);
    let image_in = c * g.in_h * g.in_w;
    let image_out = o * g.out_h * g.out_w;
    if g.kernel_h != 3 || g.kernel_w != 3 || g.params.stride != 1 {
        return Err(Error::shape(
            "winograd conv2d",
            format!("needs a 3×3 stride-1 conv, got {g:?}"),
        ));
    }
    let filters_fit = match w {
        Filters::F32(w) => w.len() >= o * c * 9,
        Filters::Bf16(w) => w.is_plain_rows() && w.rows() == o && w.k() == c * 9,
    };
    if x.len() < g.images * image_in || !filters_fit || out.len() < g.images * image_out {
        return Err(Error::shape(
            "winograd conv2d",
            format!("buffers too short for {g:?}"),
        ));
    }
    let u = filter_transform(w, o, c);
    let tiles = Tiles::of(g);
    // Panels of whole tile rows: within the byte budget, and at least a few per thread.
    let row_bytes = POSITIONS * c.max(o) * tiles.across * std::mem::size_of::<f32>();
    let budget_rows = PANEL_BYTES / row_bytes.max(1);
    let spread_rows = (g.images * tiles.down).div_ceil(4 * rayon::current_num_threads());
    let rows_per_panel = budget_rows.min(spread_rows).clamp(1, tiles.down.max(1));
    let tasks: Vec<(usize, usize)> = (0..g.images)
        .flat_map(|n| (0..tiles.down).step_by(rows_per_panel).map(move |r| (n, r)))
        .collect();
    let out = OutPtr(out.as_mut_ptr());
    let run = |(v, m): &mut (Vec<f32>, Vec<f32>), (n, first_row): (usize, usize)| {
        let rows = rows_per_panel.min(tiles.down - first_row);
        let count = rows * tiles.across;
        let image = &x[n * image_in..(n + 1) * image_in];
        let (v, m) = (
            &mut v[..POSITIONS * c * count],
            &mut m[..POSITIONS * o * count],
        );
        input_transform(g, &tiles, image, first_row, rows, v);
        for k in 0..POSITIONS {
            // U_k: rows of u 16·c apart (u is [o, 16, c]).
            let uk = ArrayView2::from_shape((o, c).strides((POSITIONS * c, 1)), &u[k * c..])
                .map_err(|e| Error::shape("winograd U", e.to_string()))?;
            let vk = ArrayView2::from_shape((c, count), &v[k * c * count..(k + 1) * c * count])
                .map_err(|e| Error::shape("winograd V", e.to_string()))?;
            let mk =
                ArrayViewMut2::from_shape((o, count), &mut m[k * o * count..(k + 1) * o * count])
                    .map_err(|e| Error::shape("winograd M", e.to_string()))?;
            sgemm(1.0, uk, vk, 0.0, mk, Parallelism::Serial)?;
        }
        output_transform(g, &tiles, m, first_row, rows, bias, |oc, oy, values| {
            let at = n * image_out + (oc * g.out_h + oy) * g.out_w;
            // SAFETY: `at..at + wo` lies inside `out` (oc < o, oy < ho, checked lengths above),
            // and only this task writes output row oy of image n (its tile rows are its own).
            let row = unsafe { std::slice::from_raw_parts_mut(out.get().add(at), g.out_w) };
            row.copy_from_slice(values);
        });
        Ok(())
    };
    let buffers = || {
        let tiles_per_panel = rows_per_panel * tiles.across;
        (
            vec![0.0f32; POSITIONS * c * tiles_per_panel],
            vec![0.0f32; POSITIONS * o * tiles_per_panel],
        )
    };
    tasks
        .into_par_iter()
        .try_for_each_init(buffers, |bufs, task| run(bufs, task))
}

/// The output's base pointer, shared by tasks that write disjoint rows of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint rows through it (see `conv2d`), and the buffer outlives them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The tiling of one image's output: `down × across` tiles of 2×2 positions (the last row or
/// column partial when ho or wo is odd).
struct Tiles {
    down: usize,
    across: usize,
    /// Width of a zero-padded input row: the 4 columns under every tile.
    padded_w: usize,
}

impl Tiles {
    fn of(g: &ConvShape) -> Tiles {
        let across = g.out_w.div_ceil(2);
        Tiles {
            down: g.out_h.div_ceil(2),
            across,
            padded_w: 2 * across + 2,
        }
    }
}

/// A conv weight `[o, c, 3, 3]` as the filter transform reads it.
#[derive(Clone, Copy)]
pub(crate) enum Filters<'a> {
    F32(&'a [f32]),
    /// bf16 in plain rows (a CPU without bf16 arithmetic): each output channel's filters are
    /// widened as the transform reaches them, so the f32 weight never exists whole.
    Bf16(&'a PairPanels),
}

/// `U [o, 16, c]` from `w [o, c, 3, 3]`: `G g Gᵀ` per filter, one output channel per task.
fn filter_transform(w: Filters<'_>, o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; o * POSITIONS * c];
    if c == 0 {
        return u;
    }
    u.par_chunks_exact_mut(POSITIONS * c)
        .enumerate()
        .for_each_init(Vec::new, |widened, (oc, u)| {
            let filters = match w {
                Filters::F32(w) => &w[oc * 9 * c..(oc + 1) * 9 * c],
                Filters::Bf16(w) => {
                    widened.resize(9 * c, 0.0);
                    w.widen_rows(oc, widened);
                    &widened[..]
                }
            };
            for (ci, g) in filters.chunks_exact(9).enumerate() {
                // G g: 4 rows of 3.
                let mut gg = [[0.0f32; 3]; 4];
                for j in 0..3 {
                    let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                    gg[0][j] = g0;
                    gg[1][j] = 0.5 * (g0 + g1 + g2);
                    gg[2][j] = 0.5 * (g0 - g1 + g2);
                    gg[3][j] = g2;
                }
                // (G g) Gᵀ: 4 columns per row.
                for (i, row) in gg.iter().enumerate() {
                    u[(4 * i) * c + ci] = row[0];
                    u[(4 * i + 1) * c + ci] = 0.5 * (row[0] + row[1] + row[2]);
                    u[(4 * i + 2) * c + ci] = 0.5 * (row[0] - row[1] + row[2]);
                    u[(4 * i + 3) * c + ci] = row[2];
                }
            }
        });
    u
}

/// `V [16, c, rows · across]` for tile rows `first_row..first_row + rows` of one image
/// `[c, h, w]`: the 4×4 input patch under each tile (zeros in the padding), as `Bᵀ d B`.
fn input_transform(
    g: &ConvShape,
    tiles: &Tiles,
    image: &[f32],
    first_row: usize,
    rows: usize,
    v: &mut [f32],
) {
    let (c, pad) = (g.channels, g.params.padding);
    let count = rows * tiles.across;
    let pw = tiles.padded_w;
    // Four zero-padded input rows, then their Bᵀ combinations (one row each).
    let mut padded = vec![0.0f32; 4 * pw];
    let mut combined = vec![0.0f32; 4 * pw];
    for ci in 0..c {
        let channel = &image[ci * g.in_h * g.in_w..(ci + 1) * g.in_h * g.in_w];
        for r in 0..rows {
            let ty = first_row + r;
            for (i, prow) in padded.chunks_exact_mut(pw).enumerate() {
                // Padded row 2·ty + i is input row 2·ty + i − pad.
                padded_row(channel, g, (2 * ty + i).checked_sub(pad), pad, prow);
            }
            let (d0, rest) = padded.split_at(pw);
            let (d1, rest) = rest.split_at(pw);
            let (d2, d3) = rest.split_at(pw);
            let (b0, rest) = combined.split_at_mut(pw);
            let (b1, rest) = rest.split_at_mut(pw);
            let (b2, b3) = rest.split_at_mut(pw);
            for x in 0..pw {
                b0[x] = d0[x] - d2[x];
                b1[x] = d1[x] + d2[x];
                b2[x] = d2[x] - d1[x];
                b3[x] = d1[x] - d3[x];
            }
            // Then · B along each row: tile tx reads columns 2·tx..2·tx + 4.
            let base = ci * count + r * tiles.across;
            let across = tiles.across;
            for (i, row) in combined.chunks_exact(pw).enumerate() {
                // Positions 4i..4i + 4 of the tile row's tiles: four runs of `across` values,
                // c·count apart.
                let first = 4 * i * c * count + base;
                let (v0, rest) = v[first..].split_at_mut(c * count);
                let (v1, rest) = rest.split_at_mut(c * count);
                let (v2, v3) = rest.split_at_mut(c * count);
                let outs = v0[..across]
                    .iter_mut()
                    .zip(&mut v1[..across])
                    .zip(&mut v2[..across])
                    .zip(&mut v3[..across]);
                for ((((a, b), d), e), x) in outs.zip(row.windows(4).step_by(2)) {
                    *a = x[0] - x[2];
                    *b = x[1] + x[2];
                    *d = x[2] - x[1];
                    *e = x[1] - x[3];
                }
            }
        }
    }
}

/// Fill `prow` (a zero-padded row, `prow[x]` = input column `x − pad`) from input row `iy`
/// (`None` or past the image: all zeros).
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

/// Output rows of tile rows `first_row..first_row + rows` of one image from
/// `M [16, o, rows · across]`: `Aᵀ M A` per tile, plus the bias, handed to `write_row` as
/// (channel, output row, its `wo` values).
fn output_transform(
    g: &ConvShape,
    tiles: &Tiles,
    m: &[f32],
    first_row: usize,
    rows: usize,
    bias: Option<&[f32]>,
    mut write_row: impl FnMut(usize, usize, &[f32]),
) {
    let (o, ho, wo) = (g.out_channels, g.out_h, g.out_w);
    let count = rows * tiles.across;
    let plane = o * count;
    // One tile row's two output rows, before clipping to wo.
    let mut top = vec![0.0f32; 2 * tiles.across];
    let mut bottom = vec![0.0f32; 2 * tiles.across];
    for oc in 0..o {
        let b = bias.map_or(0.0, |b| b[oc]);
        for r in 0..rows {
            let at = oc * count + r * tiles.across;
            let ms: [&[f32]; POSITIONS] =
                std::array::from_fn(|k| &m[k * plane + at..k * plane + at + tiles.across]);
            for tx in 0..tiles.across {
                let t: [f32; POSITIONS] = std::array::from_fn(|k| ms[k][tx]);
                // Aᵀ M: two rows of four.
                let s0: [f32; 4] = std::array::from_fn(|j| t[j] + t[4 + j] + t[8 + j]);
                let s1: [f32; 4] = std::array::from_fn(|j| t[4 + j] - t[8 + j] - t[12 + j]);
                // (Aᵀ M) A.
                top[2 * tx] = s0[0] + s0[1] + s0[2] + b;
                top[2 * tx + 1] = s0[1] - s0[2] - s0[3] + b;
                bottom[2 * tx] = s1[0] + s1[1] + s1[2] + b;
                bottom[2 * tx + 1] = s1[1] - s1[2] - s1[3] + b;
            }
            let oy = 2 * (first_row + r);
            write_row(oc, oy, &top[..wo]);
            if oy + 1 < ho {
                write_row(oc, oy + 1, &bottom[..wo]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::bf16::tests::random;
    use super::*;
    use crate::backend::Conv2dParams;
    use crate::cpu::bf16::PLAIN_ROWS;

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

    /// Odd and even sizes (partial tiles), paddings 0–2, one and several panels, against the
    /// f64 direct sum: within 1e-5 of each output's scale Σ|x·w| (the direct f32 product's
    /// rounding is of the order 1e-7 · √(9c) of it; the transforms add a few roundings more).
    #[test]
    fn matches_the_direct_sum() {
        for &(images, c, o, h, w, padding) in &[
            (1, 1, 1, 1, 1, 1),
            (1, 3, 2, 5, 7, 1),
            (2, 4, 5, 6, 6, 0),
            (1, 2, 3, 4, 9, 2),
            (2, 8, 6, 33, 17, 1),
            (1, 16, 40, 70, 66, 1),
        ] {
            let params = Conv2dParams::same(padding);
            let g = ConvShape::check(&[images, c, h, w], &[o, c, 3, 3], Some(&[o]), params)
                .expect("valid shape");
            let x = random(images * c * h * w, 1);
            let wt = random(o * c * 9, 2);
            let bias = random(o, 3);
            // The same filters in bf16 plain rows: compared with the direct sum of their
            // bf16 values.
            let packed = PairPanels::from_rows(&wt, o, 9 * c, PLAIN_ROWS);
            let widened = packed.to_rows();
            for (filters, wt) in [(Filters::F32(&wt), &wt), (Filters::Bf16(&packed), &widened)] {
                let mut out = vec![f32::NAN; images * o * g.out_h * g.out_w];
                conv2d(&g, &x, filters, Some(&bias), &mut out).expect("conv");
                let (want, scale) = naive(&g, &x, wt, &bias);
                for (i, ((&got, &want), &scale)) in out.iter().zip(&want).zip(&scale).enumerate() {
                    let err = (f64::from(got) - want).abs();
                    assert!(
                        err <= 1e-5 * scale.max(1e-3),
                        "{g:?} [{i}]: {got} vs {want} (scale {scale})"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_other_kernels_with_a_shape_error() {
        let g = ConvShape::check(&[1, 1, 4, 4], &[1, 1, 1, 1], None, Conv2dParams::same(0))
            .expect("valid shape");
        let mut out = vec![0.0; 16];
        assert!(conv2d(&g, &[0.0; 16], Filters::F32(&[1.0]), None, &mut out).is_err());
        // Filters in bf16 pair panels (the bf16 engine's layout) are not read here.
        let g = ConvShape::check(&[1, 1, 4, 4], &[1, 1, 3, 3], None, Conv2dParams::same(1))
            .expect("valid shape");
        let pairs = PairPanels::from_rows(&[1.0; 9], 1, 9, crate::cpu::bf16::MR);
        assert!(conv2d(&g, &[0.0; 16], Filters::Bf16(&pairs), None, &mut out).is_err());
    }
}

#[cfg(test)]
mod speed {
    use super::super::CpuTensor;
    use super::super::conv::{Algorithm, conv2d_by};
    use crate::backend::Conv2dParams;
    use std::time::Instant;

    /// Winograd against im2col + GEMM on SD's 3×3 convs (both forced), interleaved, medians
    /// of 7:
    /// `cargo test --release -p sd-core --lib winograd_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, not a check"]
    fn winograd_speed() {
        for &(n, c, o, side) in &[
            (2, 320, 320, 64),
            (2, 640, 640, 32),
            (2, 1280, 1280, 16),
            (2, 1280, 1280, 8),
            (1, 512, 512, 64),
            (1, 512, 512, 128),
            (1, 256, 256, 256),
            (1, 128, 128, 512),
            (2, 64, 64, 64),
        ] {
            let x = CpuTensor::from_vec(&[n, c, side, side], vec![0.5; n * c * side * side])
                .expect("x");
            let w = CpuTensor::from_vec(&[o, c, 3, 3], vec![0.25; o * c * 9]).expect("w");
            let b = CpuTensor::from_vec(&[o], vec![0.1; o]).expect("b");
            let time = |algorithm| {
                let start = Instant::now();
                conv2d_by(&x, &w, Some(&b), Conv2dParams::same(1), algorithm).expect("conv");
                start.elapsed().as_secs_f64()
            };
            let (mut direct, mut winograd) = (Vec::new(), Vec::new());
            for _ in 0..7 {
                direct.push(time(Algorithm::Direct));
                winograd.push(time(Algorithm::Winograd));
            }
            direct.sort_by(f64::total_cmp);
            winograd.sort_by(f64::total_cmp);
            let (d, f) = (direct[3], winograd[3]);
            println!(
                "[{n},{c},{side},{side}] → {o}: direct {:.1} ms, winograd {:.1} ms ({:.2}×)",
                d * 1e3,
                f * 1e3,
                d / f
            );
        }
    }
}
