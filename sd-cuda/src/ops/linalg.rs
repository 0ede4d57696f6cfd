//! Batched matmul and linear layers on cuBLAS.

use sd_core::shapes::{self, LinearDims, MatmulDims};
use sd_core::{Result, TensorInfo};

use super::elementwise::add_bias_in_place;
use super::gemm::{self, Layout, Pointers, RowMajorProduct};
use crate::backend::CudaBackend;
use crate::tensor::CudaTensor;

/// `[..., m, k] × [..., k, n] → [..., m, n]`; `b` may be 2-D and shared by every batch.
pub(crate) fn matmul(b: &CudaBackend, x: &CudaTensor, y: &CudaTensor) -> Result<CudaTensor> {
    b.expect_dtype("matmul", &[x, y])?;
    let MatmulDims {
        batch,
        m,
        k,
        n,
        b_shared,
        out_shape,
    } = shapes::matmul_dims(x.shape(), y.shape())?;
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
    let LinearDims {
        rows,
        in_features: inp,
        out_features,
        out_shape,
    } = shapes::linear_dims(x.shape(), w.shape(), bias.map(|t| t.shape()))?;
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
