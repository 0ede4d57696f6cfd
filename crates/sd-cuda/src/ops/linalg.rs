//! Batched matmul and linear layers on cuBLAS.

use sd_core::{Error, Result, TensorInfo};

use super::elementwise::add_bias_in_place;
use super::gemm::{self, Layout, Pointers, RowMajorProduct};
use crate::backend::CudaBackend;
use crate::tensor::CudaTensor;

/// `[..., m, k] × [..., k, n] → [..., m, n]`; `b` may be 2-D and shared by every batch.
pub(crate) fn matmul(b: &CudaBackend, x: &CudaTensor, y: &CudaTensor) -> Result<CudaTensor> {
    b.expect_dtype("matmul", &[x, y])?;
    let (sa, sb) = (x.shape(), y.shape());
    let mismatch = |why: &str| Error::shape("matmul", format!("a {sa:?} × b {sb:?}: {why}"));
    if sa.len() < 2 || sb.len() < 2 {
        return Err(mismatch("both operands need at least 2 dims"));
    }
    let (batch_dims, [m, k]) = split_matrix_dims(sa);
    let (b_batch_dims, [kb, n]) = split_matrix_dims(sb);
    if k != kb {
        return Err(mismatch("inner dims differ"));
    }
    let b_shared = b_batch_dims.is_empty();
    if !b_shared && b_batch_dims != batch_dims {
        return Err(mismatch("batch dims differ (b must match a's or be 2-D)"));
    }
    let batch: usize = batch_dims.iter().product();
    let mut out_shape = batch_dims.to_vec();
    out_shape.extend([m, n]);
    if k == 0 {
        return b.zeros("matmul", &out_shape);
    }
    let out = b.uninit("matmul", &out_shape)?;
    let product = if b_shared {
        // Every batch multiplies the same b: one tall product.
        RowMajorProduct {
            m: batch * m,
            n,
            k,
            batch: 1,
            a: Layout::rows(k, 0),
            b: Layout::rows(n, 0),
            c: Layout::rows(n, 0),
            alpha: 1.0,
            beta: 0.0,
        }
    } else {
        RowMajorProduct {
            m,
            n,
            k,
            batch,
            a: Layout::rows(k, m * k),
            b: Layout::rows(n, k * n),
            c: Layout::rows(n, m * n),
            alpha: 1.0,
            beta: 0.0,
        }
    };
    let stream = b.stream();
    let ptrs = Pointers {
        a: (x.device_ptr(stream), x.dtype()),
        b: (y.device_ptr(stream), y.dtype()),
        c: (out.device_ptr(stream), out.dtype()),
    };
    // SAFETY: the layouts describe exactly the shapes checked above.
    unsafe { gemm::run(b, &product, ptrs) }?;
    Ok(out)
}

/// `x · wᵀ + bias` over the last dim: `x [..., in]`, `w [out, in]`, `bias [out]`.
pub(crate) fn linear(
    b: &CudaBackend,
    x: &CudaTensor,
    w: &CudaTensor,
    bias: Option<&CudaTensor>,
) -> Result<CudaTensor> {
    b.expect_dtype("linear", &[x, w])?;
    if let Some(bias) = bias {
        b.expect_dtype("linear", &[bias])?;
    }
    let (sx, sw) = (x.shape(), w.shape());
    let mismatch = |why: &str| {
        let sbias = bias.map(|t| t.shape().to_vec());
        Error::shape(
            "linear",
            format!("x {sx:?}, w {sw:?}, bias {sbias:?}: {why}"),
        )
    };
    let (Some(&inp), &[out_features, w_in]) = (sx.last(), sw) else {
        return Err(mismatch("need x with at least 1 dim and a 2-D w [out, in]"));
    };
    if w_in != inp {
        return Err(mismatch("x's last dim differs from w's in dim"));
    }
    if bias.is_some_and(|t| t.shape() != [out_features]) {
        return Err(mismatch("bias must be [out]"));
    }
    let rows: usize = sx[..sx.len() - 1].iter().product();
    let mut out_shape = sx.to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = out_features;
    }
    let out = if inp == 0 {
        b.zeros("linear", &out_shape)?
    } else {
        let out = b.uninit("linear", &out_shape)?;
        let product = RowMajorProduct {
            m: rows,
            n: out_features,
            k: inp,
            batch: 1,
            a: Layout::rows(inp, 0),
            // w [out, in] as stored is wᵀ [in, out] transposed.
            b: Layout {
                offset: 0,
                ld: inp,
                batch_stride: 0,
                transposed: true,
            },
            c: Layout::rows(out_features, 0),
            alpha: 1.0,
            beta: 0.0,
        };
        let stream = b.stream();
        let ptrs = Pointers {
            a: (x.device_ptr(stream), x.dtype()),
            b: (w.device_ptr(stream), w.dtype()),
            c: (out.device_ptr(stream), out.dtype()),
        };
        // SAFETY: the layouts describe exactly the shapes checked above.
        unsafe { gemm::run(b, &product, ptrs) }?;
        out
    };
    if let Some(bias) = bias {
        add_bias_in_place(b, &out, bias, 1)?;
    }
    Ok(out)
}

/// Split `[..., r, c]` into the batch dims and the matrix dims. The caller checked rank ≥ 2.
fn split_matrix_dims(shape: &[usize]) -> (&[usize], [usize; 2]) {
    let (batch, mat) = shape.split_at(shape.len() - 2);
    (batch, [mat[0], mat[1]])
}
