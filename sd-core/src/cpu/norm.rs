//! Group norm (optionally fused with SiLU), layer norm and softmax, plus the row kernels
//! (`row_max`, `exp_shifted_in_place`) that attention's online softmax shares.

use rayon::prelude::*;

use super::CpuTensor;
use super::elementwise::{PAR_CHUNK, exp, silu, vectorized};
use crate::backend::TensorInfo;
use crate::error::Result;
use crate::shapes;

/// Independent accumulators in the reductions below: lets LLVM keep them in vector registers
/// instead of one serial dependency chain.
const LANES: usize = 8;

pub(crate) fn group_norm(
    x: &CpuTensor,
    groups: usize,
    gamma: &CpuTensor,
    beta: &CpuTensor,
    eps: f32,
    fuse_silu: bool,
) -> Result<CpuTensor> {
    let shape = x.shape();
    let dims = shapes::group_norm_dims(shape, groups, gamma.shape(), beta.shape())?;
    let (gamma, beta) = (gamma.data(), beta.data());
    let (channels_per_group, spatial) = (dims.channels_per_group, dims.spatial);
    let group_len = dims.group_len();
    let mut out = vec![0.0; x.numel()];
    if out.is_empty() {
        return CpuTensor::from_vec(shape, out);
    }
    debug_assert_eq!(out.len(), dims.batch * groups * group_len);

    // One task per (sample, group): its channels are one contiguous run of memory.
    out.par_chunks_mut(group_len)
        .zip(x.data().par_chunks(group_len))
        .enumerate()
        .for_each(|(task, (out, src))| {
            let channels = (task % groups) * channels_per_group..;
            let affine = gamma[channels.clone()].iter().zip(&beta[channels]);
            vectorized(
                #[inline(always)]
                || normalize_group(out, src, spatial, affine, eps, fuse_silu),
            );
        });
    CpuTensor::from_vec(shape, out)
}

/// Normalise one group (`src`: its channels' planes of `spatial` values, one after the other)
/// with one shared mean and variance, then each channel's `gamma, beta`, then SiLU if asked.
#[inline(always)]
fn normalize_group<'a>(
    out: &mut [f32],
    src: &[f32],
    spatial: usize,
    affine: impl Iterator<Item = (&'a f32, &'a f32)>,
    eps: f32,
    fuse_silu: bool,
) {
    let Stats {
        mean,
        mean_lo,
        rstd,
    } = Stats::of(src, eps);
    let planes = out.chunks_exact_mut(spatial).zip(src.chunks_exact(spatial));
    for ((out, src), (&gamma, &beta)) in planes.zip(affine) {
        let scale = rstd * gamma;
        if fuse_silu {
            for (o, &v) in out.iter_mut().zip(src) {
                *o = silu(((v - mean) - mean_lo) * scale + beta);
            }
        } else {
            for (o, &v) in out.iter_mut().zip(src) {
                *o = ((v - mean) - mean_lo) * scale + beta;
            }
        }
    }
}

pub(crate) fn layer_norm(
    x: &CpuTensor,
    gamma: &CpuTensor,
    beta: &CpuTensor,
    eps: f32,
) -> Result<CpuTensor> {
    let shape = x.shape();
    let width = shapes::layer_norm_width(shape, gamma.shape(), beta.shape())?;
    let (gamma, beta) = (gamma.data(), beta.data());
    let mut out = vec![0.0; x.numel()];
    if out.is_empty() {
        return CpuTensor::from_vec(shape, out);
    }
    let task_len = rows_per_task(width) * width;
    out.par_chunks_mut(task_len)
        .zip(x.data().par_chunks(task_len))
        .for_each(|(out, src)| {
            vectorized(
                #[inline(always)]
                || layer_norm_rows(out, src, gamma, beta, eps),
            )
        });
    CpuTensor::from_vec(shape, out)
}

/// Layer norm of each row of `src` (rows as long as `gamma`).
#[inline(always)]
fn layer_norm_rows(out: &mut [f32], src: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    for (out, src) in out.chunks_exact_mut(width).zip(src.chunks_exact(width)) {
        let Stats {
            mean,
            mean_lo,
            rstd,
        } = Stats::of(src, eps);
        let affine = gamma.iter().zip(beta);
        for ((o, &v), (&g, &b)) in out.iter_mut().zip(src).zip(affine) {
            *o = ((v - mean) - mean_lo) * rstd * g + b;
        }
    }
}

pub(crate) fn softmax(x: &CpuTensor) -> Result<CpuTensor> {
    let shape = x.shape();
    let width = shapes::last_dim("softmax", shape)?;
    let mut out = x.data().to_vec();
    if out.is_empty() {
        return CpuTensor::from_vec(shape, out);
    }
    out.par_chunks_mut(rows_per_task(width) * width)
        .for_each(|rows| {
            vectorized(
                #[inline(always)]
                || softmax_rows(rows, width),
            )
        });
    CpuTensor::from_vec(shape, out)
}

/// Softmax of each `width`-long row, in place.
#[inline(always)]
fn softmax_rows(rows: &mut [f32], width: usize) {
    for row in rows.chunks_exact_mut(width) {
        let max = row_max(row);
        let inv_sum = 1.0 / exp_shifted_in_place(row, max);
        row.iter_mut().for_each(|v| *v *= inv_sum);
    }
}

/// Whole rows per rayon task, about [`PAR_CHUNK`] elements.
fn rows_per_task(width: usize) -> usize {
    (PAR_CHUNK / width.max(1)).max(1)
}

/// Normalisation statistics of a run of values.
#[derive(Debug, Clone, Copy)]
struct Stats {
    /// The mean rounded to f32 ...
    mean: f32,
    /// ... and the rest of it: `(v − mean) − mean_lo` is the f64-accurate deviation, because
    /// `v − mean` is exact for v near the mean (Sterbenz). Without it, a group whose mean is
    /// large next to its spread (|mean|/std ~ 1e3) loses digits to the rounding of the mean.
    mean_lo: f32,
    /// `1/√(var + eps)`, biased variance as torch.
    rstd: f32,
}

impl Stats {
    /// Sums and sums of squares accumulate in f64 (one pass over the data): `E[x²] − mean²`
    /// then has a relative error of ~1e-16·(mean/std)², negligible for any activations.
    #[inline(always)]
    fn of(xs: &[f32], eps: f32) -> Stats {
        let mut sums = [0.0f64; LANES];
        let mut squares = [0.0f64; LANES];
        let chunks = xs.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for i in 0..LANES {
                let v = f64::from(chunk[i]);
                sums[i] += v;
                squares[i] += v * v;
            }
        }
        let mut sum: f64 = sums.iter().sum();
        let mut sum_sq: f64 = squares.iter().sum();
        for &v in tail {
            sum += f64::from(v);
            sum_sq += f64::from(v) * f64::from(v);
        }
        let n = xs.len() as f64;
        let mean = sum / n;
        let var = (sum_sq / n - mean * mean).max(0.0);
        let mean_hi = mean as f32;
        Stats {
            mean: mean_hi,
            mean_lo: (mean - f64::from(mean_hi)) as f32,
            rstd: (1.0 / (var + f64::from(eps)).sqrt()) as f32,
        }
    }
}

/// The largest element of `row` (−∞ when empty; NaNs are skipped, and propagate later
/// through `exp`).
pub(super) fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            lanes[i] = if chunk[i] > lanes[i] {
                chunk[i]
            } else {
                lanes[i]
            };
        }
    }
    lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Replace every `v` in `row` with `exp(v − shift)`; returns their sum.
#[inline(always)]
pub(super) fn exp_shifted_in_place(row: &mut [f32], shift: f32) -> f32 {
    // Two simple loops rather than one: each vectorises on its own, and the row is in L1.
    for v in row.iter_mut() {
        *v = exp(*v - shift);
    }
    let mut lanes = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            lanes[i] += chunk[i];
        }
    }
    lanes.iter().chain(tail).sum()
}
