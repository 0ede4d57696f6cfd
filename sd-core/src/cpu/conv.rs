//! conv2d as im2col + GEMM, one panel of output positions at a time.
//!
//! Per image, the convolution is the product `out [o, ho·wo] = w [o, c·kh·kw] · col [c·kh·kw, ho·wo]`
//! where column `q` of `col` holds the input patch under output position `q`. Materialising all
//! of `col` would take 9× the input (47 MB for one 320×64×64 image); instead the output
//! positions are cut into panels whose slice of `col` takes a few MiB, and each rayon task builds one panel's columns in its own buffer and multiplies it with a serial GEMM
//! straight into its (disjoint) part of the output. The tasks run over every (image, panel) pair,
//! so the im2col work is spread over the cores too. A 1×1 stride-1 unpadded convolution needs no
//! im2col at all: the input image `[c, h·w]` is already `col`. Large stride-1 3×3 convolutions
//! take Winograd's algorithm instead (`winograd.rs`).

use ndarray::{ArrayView2, ArrayViewMut2, ArrayViewMut3, Axis, s};
use rayon::prelude::*;

use super::CpuTensor;
use super::allocator::repeated;
use super::bf16::{self, PairPanels};
use super::gemm::{Parallelism, sgemm};
use super::linalg::matrix;
use super::widened;
use super::winograd;
use crate::backend::{Conv2dParams, TensorInfo};
use crate::error::{Error, Result};
use crate::shapes::ConvShape;

/// Target size of one panel of im2col columns. Chosen by measurement (benches/gemm.rs conv rows,
/// GFLOP per busy core): 2–8 MiB panels ran at the same speed, 0.25–1 MiB ones 5–30% slower
/// (each panel's product re-packs the whole weight matrix, so narrow panels pay for it often).
/// 4 MiB is 9% of the 47 MB a whole 320×64×64 im2col would take. The multi-panel tests in
/// tests/cpu_linalg_ops.rs assume at most 8 MiB.
const PANEL_BYTES: usize = 4 << 20;
/// The same for the bf16 engine, whose kernel runs twice as fast, so that streaming 4 MiB
/// panels of im2col data through L3 (and packing them) took a third of the time: panels this
/// small stay in L2 (1 MiB here) while they are packed. Measured (`cargo run --release
/// --example cpu_ops -- --precision bf16`): VAE conv [1,256,256,256] 330 → 246 ms, UNet conv
/// [2,320,64,64] 52 → 42 ms against 4 MiB; 256 KiB and 1 MiB were 3–9 % slower.
const BF16_PANEL_BYTES: usize = 512 << 10;
/// With bf16 weights widened for the f32 engine (no bf16 arithmetic), the whole batch's im2col
/// columns are built at once up to this size, so that each block of weight rows is widened once
/// per call rather than once per panel: SD's 16×16 and 8×8 UNet convs (1280 channels, 24 and
/// 6 MB of columns at batch 2) had their 59 MB weight widened 6 and 2 times per call.
const WIDENED_BATCH_BYTES: usize = 32 << 20;
/// With fewer (image, panel) tasks than this per thread, the panels are done one after the
/// other, each product threaded over output channels instead (SD's 8×8 latents at batch 1
/// are one panel).
const MIN_TASKS_PER_THREAD: usize = 2;
/// Panel widths are multiples of this (a few SIMD vectors) and never below it.
const PANEL_ALIGN: usize = 16;

/// How a convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// Winograd where [`winograd::choose`] picks a tile size (3×3 stride 1, large enough to
    /// gain), im2col + GEMM elsewhere.
    Fastest,
    /// im2col + GEMM always (the A/B baseline of the speed tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Direct,
    /// Winograd with the given tile size wherever it can run (3×3 stride 1), however small
    /// the conv.
    #[cfg_attr(not(test), allow(dead_code))]
    Winograd(winograd::TileSize),
}

/// `x [n, c, h, w]`, `w [o, c, kh, kw]`, `bias [o]` → `[n, o, ho, wo]` with
/// `ho = (h + 2·padding − kh) / stride + 1` (likewise `wo`).
pub(crate) fn conv2d(
    x: &CpuTensor,
    w: &CpuTensor,
    bias: Option<&CpuTensor>,
    params: Conv2dParams,
) -> Result<CpuTensor> {
    conv2d_by(x, w, bias, params, Algorithm::Fastest)
}

/// [`conv2d`] by a given algorithm.
pub(crate) fn conv2d_by(
    x: &CpuTensor,
    w: &CpuTensor,
    bias: Option<&CpuTensor>,
    params: Conv2dParams,
    algorithm: Algorithm,
) -> Result<CpuTensor> {
    let (sx, sw, sbias) = (x.shape(), w.shape(), bias.map(|b| b.shape()));
    let geometry = ConvShape::check(sx, sw, sbias, params)?;
    // Past the shape checks, only the output's size can still fail.
    let too_large = |why: &str| {
        Error::shape(
            "conv2d",
            format!("x {sx:?}, w {sw:?}, bias {sbias:?}, {params:?}: {why}"),
        )
    };
    let o = geometry.out_channels;
    let out_shape = geometry.out_shape();
    let out_len = out_shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| too_large("output too large"))?;
    let mut out = repeated(out_len, &[]);
    let bias = bias.map(|b| b.data());
    let weights = match w.packed() {
        Some(panels) if panels.is_plain_rows() => Weights::Widened(panels),
        Some(panels) => Weights::Bf16(panels),
        None => Weights::F32(matrix(w.data(), o, geometry.patch_len())?),
    };
    let filters = match weights {
        Weights::F32(_) => winograd::Filters::F32(w.data()),
        Weights::Widened(panels) | Weights::Bf16(panels) => winograd::Filters::Bf16(panels),
    };
    let winograd = match algorithm {
        Algorithm::Fastest => winograd::choose(&geometry, filters),
        Algorithm::Direct => None,
        Algorithm::Winograd(f) => Some(f),
    };
    if let Some(f) = winograd {
        winograd::conv2d(f, &geometry, x.data(), filters, bias, &mut out)?;
        return CpuTensor::from_vec(&out_shape, out);
    }

    let mut out3 =
        ArrayViewMut3::from_shape((geometry.images, o, geometry.positions()), &mut out[..])
            .map_err(|e| too_large(&e.to_string()))?;
    if let Weights::Widened(panels) = weights {
        let columns_bytes = [geometry.patch_len(), geometry.positions(), 4]
            .iter()
            .fold(geometry.images, |acc, &d| acc.saturating_mul(d));
        if geometry.is_pointwise() || columns_bytes <= WIDENED_BATCH_BYTES {
            widened_whole_batch(&geometry, x.data(), panels, bias, out3)?;
            return CpuTensor::from_vec(&out_shape, out);
        }
    }
    // bf16 panels are whole kernel tiles wide where the image allows.
    let (panel_bytes, align) = match weights {
        Weights::F32(_) | Weights::Widened(_) => (PANEL_BYTES, PANEL_ALIGN),
        Weights::Bf16(_) => (BF16_PANEL_BYTES, bf16::NR),
    };
    let panel_cols = panel_width(
        geometry.patch_len(),
        geometry.positions(),
        panel_bytes,
        align,
    );
    let tasks = output_panels(&mut out3, panel_cols);
    let (channels, in_positions) = (geometry.channels, geometry.in_h * geometry.in_w);
    let image_len = channels * in_positions;
    let compute = |col_buffer: &mut Vec<f32>, panel: Panel<'_>, parallelism| {
        let image = &x.data()[panel.image * image_len..(panel.image + 1) * image_len];
        let (first, width) = (panel.first_position, panel.out.ncols());
        let cols = if geometry.is_pointwise() {
            matrix(image, channels, in_positions)?.slice_move(s![.., first..first + width])
        } else {
            let buffer = &mut col_buffer[..geometry.patch_len() * width];
            im2col_panel(&geometry, image, first, width, buffer);
            matrix(buffer, geometry.patch_len(), width)?
        };
        multiply_panel(weights, cols, bias, panel.out, parallelism)
    };
    let buffer_len = if geometry.is_pointwise() {
        0
    } else {
        geometry.patch_len() * panel_cols
    };
    let new_buffer = || vec![0.0f32; buffer_len];

    if tasks.len() >= rayon::current_num_threads() * MIN_TASKS_PER_THREAD {
        tasks
            .into_par_iter()
            .try_for_each_init(new_buffer, |buffer, panel| {
                compute(buffer, panel, Parallelism::Serial)
            })?;
    } else {
        let mut buffer = new_buffer();
        for panel in tasks {
            compute(&mut buffer, panel, Parallelism::Parallel)?;
        }
    }
    CpuTensor::from_vec(&out_shape, out)
}

/// One task: the output columns `first_position..first_position + out.ncols()` of one image.
struct Panel<'a> {
    image: usize,
    first_position: usize,
    out: ArrayViewMut2<'a, f32>,
}

/// Columns per panel: at most about `panel_bytes` of im2col data, with the image's output
/// positions shared evenly between its panels (so no task is a small leftover) and rounded up
/// to a multiple of `align`.
fn panel_width(patch_len: usize, positions: usize, panel_bytes: usize, align: usize) -> usize {
    let max_cols = (panel_bytes / (patch_len.max(1) * std::mem::size_of::<f32>())).max(align);
    let panels = positions.div_ceil(max_cols).max(1);
    positions
        .div_ceil(panels)
        .next_multiple_of(align)
        .min(positions.max(1))
}

/// Cut `out [n, o, positions]` into disjoint `[o, ≤panel_cols]` views, image by image.
fn output_panels<'a>(out: &'a mut ArrayViewMut3<'_, f32>, panel_cols: usize) -> Vec<Panel<'a>> {
    let mut panels = Vec::new();
    for (image, mut rest) in out.outer_iter_mut().enumerate() {
        let mut first_position = 0;
        while rest.ncols() > 0 {
            let width = panel_cols.min(rest.ncols());
            let (head, tail) = rest.split_at(Axis(1), width);
            panels.push(Panel {
                image,
                first_position,
                out: head,
            });
            first_position += width;
            rest = tail;
        }
    }
    panels
}

/// A conv weight as the product's left operand `[o, c·kh·kw]`.
#[derive(Clone, Copy)]
enum Weights<'a> {
    F32(ArrayView2<'a, f32>),
    /// Packed for [`Precision::Bf16`](super::Precision::Bf16) in MR-row panels.
    Bf16(&'a PairPanels),
    /// bf16 in plain rows, for a CPU without bf16 arithmetic (`widened.rs`).
    Widened(&'a PairPanels),
}

/// `out ← weights · cols (+ bias per output channel)`.
fn multiply_panel(
    weights: Weights<'_>,
    cols: ArrayView2<'_, f32>,
    bias: Option<&[f32]>,
    mut out: ArrayViewMut2<'_, f32>,
    parallelism: Parallelism,
) -> Result<()> {
    let beta = start_with_bias(&mut out, bias);
    match weights {
        Weights::F32(weights) => sgemm(1.0, weights, cols, beta, out, parallelism),
        Weights::Widened(panels) => widened::product(panels, cols, beta, out, parallelism),
        Weights::Bf16(panels) => {
            if beta == 0.0 {
                out.fill(0.0);
            }
            bf16_panel_product(panels, cols, out, parallelism)
        }
    }
}

/// The bias is fused: each row of `out [o, width]` starts as its channel's bias and the
/// product accumulates onto it with the returned β (0 without a bias).
fn start_with_bias(out: &mut ArrayViewMut2<'_, f32>, bias: Option<&[f32]>) -> f32 {
    match bias {
        Some(bias) => {
            for (mut row, &b) in out.outer_iter_mut().zip(bias) {
                row.fill(b);
            }
            1.0
        }
        None => 0.0,
    }
}

/// `out [n, o, positions]` for a plain-rows bf16 weight, every image's columns at once (see
/// [`WIDENED_BATCH_BYTES`] and [`widened::shared_products`]).
fn widened_whole_batch(
    g: &ConvShape,
    x: &[f32],
    weights: &PairPanels,
    bias: Option<&[f32]>,
    mut out: ArrayViewMut3<'_, f32>,
) -> Result<()> {
    let (patch_len, positions) = (g.patch_len(), g.positions());
    let image_len = g.channels * g.in_h * g.in_w;
    let image = |n: usize| &x[n * image_len..(n + 1) * image_len];
    // A pointwise conv's columns are its input image; others' are built, an image per task.
    let built: Vec<Vec<f32>> = if g.is_pointwise() {
        Vec::new()
    } else {
        (0..g.images)
            .into_par_iter()
            .map(|n| {
                let mut columns = vec![0.0f32; patch_len * positions];
                im2col_panel(g, image(n), 0, positions, &mut columns);
                columns
            })
            .collect()
    };
    let mut beta = 0.0;
    let mut operands = Vec::with_capacity(g.images);
    for (n, mut out) in out.outer_iter_mut().enumerate() {
        beta = start_with_bias(&mut out, bias);
        let columns = match built.get(n) {
            Some(columns) => matrix(columns, patch_len, positions)?,
            None => matrix(image(n), g.channels, positions)?,
        };
        operands.push((columns, out));
    }
    widened::shared_products(weights, operands, beta)
}

/// `out += weights · cols` with bf16 operands: the columns are packed here, and with
/// [`Parallelism::Parallel`] the output channels are shared between the threads.
fn bf16_panel_product(
    weights: &PairPanels,
    cols: ArrayView2<'_, f32>,
    mut out: ArrayViewMut2<'_, f32>,
    parallelism: Parallelism,
) -> Result<()> {
    let (k, width) = cols.dim();
    let cols = cols.as_standard_layout();
    let packed_cols = PairPanels::from_columns(cols.as_slice().unwrap_or(&[]), k, width, bf16::NR);
    let threads = match parallelism {
        Parallelism::Serial => 1,
        Parallelism::Parallel => rayon::current_num_threads(),
    };
    // Whole panels of weight rows per task, a few tasks per thread.
    let width = weights.width();
    let block = out
        .nrows()
        .div_ceil(4 * threads)
        .next_multiple_of(width)
        .max(width);
    let tasks: Vec<_> = out
        .axis_chunks_iter_mut(Axis(0), block)
        .enumerate()
        .collect();
    let product = |(i, rows): (usize, ArrayViewMut2<'_, f32>)| {
        let weights = weights.view().rows(i * block, rows.nrows());
        bf16::product(weights, packed_cols.view(), rows);
    };
    if threads > 1 {
        tasks.into_par_iter().for_each(product);
    } else {
        tasks.into_iter().for_each(product);
    }
    Ok(())
}

/// Fill `col [patch_len, width]` (row-major) with the input patches under output positions
/// `first..first + width` of one image `[c, h, w]`; taps in the padding are zero.
fn im2col_panel(g: &ConvShape, image: &[f32], first: usize, width: usize, col: &mut [f32]) {
    let taps = (0..g.channels).flat_map(|ci| {
        (0..g.kernel_h).flat_map(move |ky| (0..g.kernel_w).map(move |kx| (ci, ky, kx)))
    });
    for ((ci, ky, kx), col_row) in taps.zip(col.chunks_exact_mut(width)) {
        let channel = &image[ci * g.in_h * g.in_w..(ci + 1) * g.in_h * g.in_w];
        // Walk the panel one output row (segment of equal oy) at a time.
        let mut q = first;
        let mut filled = 0;
        while filled < width {
            let (oy, ox) = (q / g.out_w, q % g.out_w);
            let len = (g.out_w - ox).min(width - filled);
            let segment = &mut col_row[filled..filled + len];
            match (oy * g.params.stride + ky).checked_sub(g.params.padding) {
                Some(iy) if iy < g.in_h => {
                    let in_row = &channel[iy * g.in_w..(iy + 1) * g.in_w];
                    gather_row(
                        segment,
                        in_row,
                        ox * g.params.stride + kx,
                        g.params.stride,
                        g.params.padding,
                    );
                }
                _ => segment.fill(0.0),
            }
            q += len;
            filled += len;
        }
    }
}

/// `dst[j] = src[start + j·stride − padding]`, zero where that index falls outside `src`
/// (`start` already includes the kernel offset; the subtraction is the padding).
fn gather_row(dst: &mut [f32], src: &[f32], start: usize, stride: usize, padding: usize) {
    // Taps j with start + j·stride in padding..padding + src.len() read the input.
    let lo = padding
        .saturating_sub(start)
        .div_ceil(stride)
        .min(dst.len());
    let end = padding + src.len(); // one past the last readable padded index
    let hi = if end > start {
        ((end - start).div_ceil(stride)).clamp(lo, dst.len())
    } else {
        lo
    };
    dst[..lo].fill(0.0);
    dst[hi..].fill(0.0);
    if lo == hi {
        return;
    }
    let first_src = start + lo * stride - padding;
    if stride == 1 {
        dst[lo..hi].copy_from_slice(&src[first_src..first_src + (hi - lo)]);
    } else {
        for (d, &v) in dst[lo..hi]
            .iter_mut()
            .zip(src[first_src..].iter().step_by(stride))
        {
            *d = v;
        }
    }
}
