//! Batched matmul and linear layers over the GEMM engine.

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::CpuTensor;
use super::allocator::repeated;
use super::gemm::{Parallelism, sgemm};
use crate::backend::TensorInfo;
use crate::error::{Error, Result};
use crate::shapes::{self, LinearDims, MatmulDims};

/// A batch is spread over the cores one matrix per task (instead of threading each product in
/// turn) when its matrices are this small (sgemm would not thread them)...
const SMALL_PRODUCT_MACS: usize = 1 << 20;
/// ...or when there are at least this many matrices per thread, enough to keep the threads
/// evenly busy (attention's batch × heads products).
const BATCH_TASKS_PER_THREAD: usize = 4;

/// `[..., m, k] × [..., k, n] → [..., m, n]`; `b` may be 2-D and shared by every batch.
pub(crate) fn matmul(a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
    let MatmulDims {
        batch,
        m,
        k,
        n,
        b_shared,
        out_shape,
    } = shapes::matmul_dims(a.shape(), b.shape())?;
    let mut out = repeated(batch * m * n, &[]);

    if b_shared {
        // Every batch multiplies the same b: stack the batches into one tall product.
        let a2 = matrix(a.data(), batch * m, k)?;
        let b2 = matrix(b.data(), k, n)?;
        sgemm(
            1.0,
            a2,
            b2,
            0.0,
            matrix_mut(&mut out, batch * m, n)?,
            Parallelism::Parallel,
        )?;
    } else {
        let product = |(i, c): (usize, &mut [f32]), parallelism| {
            let ai = matrix(&a.data()[i * m * k..(i + 1) * m * k], m, k)?;
            let bi = matrix(&b.data()[i * k * n..(i + 1) * k * n], k, n)?;
            sgemm(1.0, ai, bi, 0.0, matrix_mut(c, m, n)?, parallelism)
        };
        // chunks_mut panics on a zero chunk size; an empty output has nothing to compute.
        if m * n > 0 {
            let small = m.saturating_mul(k).saturating_mul(n) < SMALL_PRODUCT_MACS;
            let many = batch >= BATCH_TASKS_PER_THREAD * rayon::current_num_threads();
            if batch > 1 && (small || many) {
                out.par_chunks_mut(m * n)
                    .enumerate()
                    .try_for_each(|ic| product(ic, Parallelism::Serial))?;
            } else {
                out.chunks_mut(m * n)
                    .enumerate()
                    .try_for_each(|ic| product(ic, Parallelism::Parallel))?;
            }
        }
    }
    CpuTensor::from_vec(&out_shape, out)
}

/// `x · wᵀ + bias` over the last dim: `x [..., in]`, `w [out, in]` (dense f32, or packed
/// bf16: pair panels run on the bf16 engine, plain rows are widened for the f32 one),
/// `bias [out]`.
pub(crate) fn linear(x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> Result<CpuTensor> {
    let LinearDims {
        rows,
        in_features: inp,
        out_features,
        out_shape,
    } = shapes::linear_dims(x.shape(), w.shape(), bias.map(|b| b.shape()))?;

    // Fusing the bias: start every output row as the bias and let the product accumulate onto
    // it (β = 1), which costs the engine one read of c instead of a separate pass. The rows are
    // filled in parallel (`repeated`): this first touch of a fresh allocation is where the OS
    // maps its pages, which done on one thread took a third of the time of SD's largest
    // linears.
    let widened = match w.packed() {
        Some(panels) if panels.is_plain_rows() => Some(panels),
        Some(panels) => {
            let mut out = vec![0.0f32; rows * out_features];
            super::bf16::linear(x.data(), rows, panels, bias.map(|b| b.data()), &mut out);
            return CpuTensor::from_vec(&out_shape, out);
        }
        None => None,
    };
    let (mut out, beta) = match bias {
        Some(bias) => (repeated(rows * out_features, bias.data()), 1.0),
        None => (repeated(rows * out_features, &[]), 0.0),
    };
    let x2 = matrix(x.data(), rows, inp)?;
    let out2 = matrix_mut(&mut out, rows, out_features)?;
    match widened {
        // bf16 storage without bf16 arithmetic: the f32 engine on blocks widened in turn.
        Some(panels) => super::widened::linear(x2, panels, beta, out2)?,
        None => {
            let w2 = matrix(w.data(), out_features, inp)?;
            sgemm(1.0, x2, w2.t(), beta, out2, Parallelism::Parallel)?;
        }
    }
    CpuTensor::from_vec(&out_shape, out)
}

/// A row-major `[rows, cols]` view of `data`.
pub(super) fn matrix(data: &[f32], rows: usize, cols: usize) -> Result<ArrayView2<'_, f32>> {
    ArrayView2::from_shape((rows, cols), data)
        .map_err(|e| Error::shape("matrix view", format!("[{rows}, {cols}]: {e}")))
}

/// A row-major mutable `[rows, cols]` view of `data`.
pub(super) fn matrix_mut(
    data: &mut [f32],
    rows: usize,
    cols: usize,
) -> Result<ArrayViewMut2<'_, f32>> {
    ArrayViewMut2::from_shape((rows, cols), data)
        .map_err(|e| Error::shape("matrix view", format!("[{rows}, {cols}]: {e}")))
}
