//! Row-major matrix products on cuBLAS (column-major), f32 accumulation.
//!
//! A row-major matrix `X [r, c]` with row pitch `ld` is, to cuBLAS, the column-major matrix
//! `Xᵀ [c, r]` with leading dimension `ld`. So the row-major product `C = A·B` is issued as the
//! column-major `Cᵀ = Bᵀ·Aᵀ`: operands swapped, `m` and `n` swapped, leading dims unchanged.
//! [`ColumnMajorCall::new`] does that translation; it is pure and tested against an emulation
//! of cuBLAS's definition below.

use std::ffi::c_void;

use cudarc::cublas::result::gemm_strided_batched_ex;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use sd_core::{DType, Error, Result};

use crate::backend::CudaBackend;

/// One operand of a row-major product, as laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Elements from the buffer start to the first matrix.
    pub offset: usize,
    /// Row pitch in elements of the matrix *as stored*.
    pub ld: usize,
    /// Elements between consecutive matrices of the batch (0: one matrix shared by all).
    pub batch_stride: usize,
    /// The memory holds the operand's transpose (row-major `[cols, rows]` of the logical matrix).
    pub transposed: bool,
}

impl Layout {
    /// A plain row-major matrix with row pitch `ld`, matrices `batch_stride` apart.
    pub fn rows(ld: usize, batch_stride: usize) -> Self {
        Layout {
            offset: 0,
            ld,
            batch_stride,
            transposed: false,
        }
    }
}

/// `C[i] = alpha · A[i]·B[i] + beta · C[i]` for `i < batch`, row-major, `A [m, k]`, `B [k, n]`,
/// `C [m, n]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RowMajorProduct {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: Layout,
    pub b: Layout,
    pub c: Layout,
    pub alpha: f32,
    pub beta: f32,
}

/// The arguments of `cublasGemmStridedBatchedEx` (column-major), operands in cuBLAS's order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ColumnMajorCall {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    /// Which row-major operand cuBLAS's `A` is: always the row-major `B`, and vice versa.
    pub a: Layout,
    pub b: Layout,
    pub c: Layout,
    pub batch: i32,
}

fn int(what: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        Error::shape(
            "matmul",
            format!("{what} = {value} exceeds cuBLAS's 32-bit sizes"),
        )
    })
}

impl ColumnMajorCall {
    pub fn new(p: &RowMajorProduct) -> Result<Self> {
        for (what, ld) in [("lda", p.a.ld), ("ldb", p.b.ld), ("ldc", p.c.ld)] {
            int(what, ld)?;
        }
        Ok(ColumnMajorCall {
            trans_a: p.b.transposed,
            trans_b: p.a.transposed,
            m: int("n", p.n)?,
            n: int("m", p.m)?,
            k: int("k", p.k)?,
            a: p.b,
            b: p.a,
            c: p.c,
            batch: int("batch", p.batch)?,
        })
    }
}

fn data_type(dtype: DType) -> cudaDataType {
    match dtype {
        DType::F16 => cudaDataType::CUDA_R_16F,
        _ => cudaDataType::CUDA_R_32F,
    }
}

fn op(transposed: bool) -> cublasOperation_t {
    if transposed {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// Device addresses and storage types of the three operands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pointers {
    pub a: (u64, DType),
    pub b: (u64, DType),
    pub c: (u64, DType),
}

/// Run `p` on cuBLAS. f32 accumulation in every mode (`CUBLAS_COMPUTE_32F`: no TF32, no f16
/// accumulation).
///
/// # Safety
///
/// The pointers must address device buffers large enough for every matrix `p` describes.
pub(crate) unsafe fn run(b: &CudaBackend, p: &RowMajorProduct, ptrs: Pointers) -> Result<()> {
    if p.m == 0 || p.n == 0 || p.batch == 0 {
        return Ok(());
    }
    let call = ColumnMajorCall::new(p)?;
    // cuBLAS's A is the row-major B and vice versa.
    let (a_ptr, a_type) = ptrs.b;
    let (b_ptr, b_type) = ptrs.a;
    let (c_ptr, c_type) = ptrs.c;
    let at = |ptr: u64, dtype: DType, offset: usize| {
        (ptr + (offset * dtype.size_in_bytes()) as u64) as *const c_void
    };
    let (alpha, beta) = (p.alpha, p.beta);
    let (_guard, blas) = b.blas()?;
    // SAFETY: the caller vouches for the buffers; alpha and beta are host f32 values, matching
    // CUBLAS_COMPUTE_32F in the default host pointer mode.
    unsafe {
        gemm_strided_batched_ex(
            *blas.handle(),
            op(call.trans_a),
            op(call.trans_b),
            call.m,
            call.n,
            call.k,
            (&alpha as *const f32).cast(),
            at(a_ptr, a_type, call.a.offset),
            data_type(a_type),
            call.a.ld as i32,
            call.a.batch_stride as i64,
            at(b_ptr, b_type, call.b.offset),
            data_type(b_type),
            call.b.ld as i32,
            call.b.batch_stride as i64,
            (&beta as *const f32).cast(),
            at(c_ptr, c_type, call.c.offset).cast_mut(),
            data_type(c_type),
            call.c.ld as i32,
            call.c.batch_stride as i64,
            call.batch,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        )
    }
    .map_err(|e| Error::Backend {
        backend: "cuda",
        reason: format!("cuBLAS product {p:?}: {e}"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// cuBLAS's definition of a strided batched GEMM, column-major, on host slices:
    /// `C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i]`, `op(A) [m, k]`, element (r, c) of a stored
    /// matrix at `r + c·ld`.
    pub(crate) fn emulate(
        call: &ColumnMajorCall,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        alpha: f32,
        beta: f32,
    ) {
        let (m, n, k) = (call.m as usize, call.n as usize, call.k as usize);
        let get = |data: &[f32], l: &Layout, i: usize, trans: bool, r: usize, col: usize| {
            let (rr, cc) = if trans { (col, r) } else { (r, col) };
            data[l.offset + i * l.batch_stride + rr + cc * l.ld]
        };
        for i in 0..call.batch as usize {
            for row in 0..m {
                for col in 0..n {
                    let dot: f32 = (0..k)
                        .map(|p| {
                            get(a, &call.a, i, call.trans_a, row, p)
                                * get(b, &call.b, i, call.trans_b, p, col)
                        })
                        .sum();
                    let at = call.c.offset + i * call.c.batch_stride + row + col * call.c.ld;
                    c[at] = alpha * dot + beta * c[at];
                }
            }
        }
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + seed * 13) % 11) as f32 - 5.0)
            .collect()
    }

    #[test]
    fn a_row_major_batched_product_maps_onto_cublas() {
        let (batch, m, k, n) = (3, 4, 5, 2);
        let (a, b) = (values(batch * m * k, 1), values(batch * k * n, 2));
        let p = RowMajorProduct {
            m,
            n,
            k,
            batch,
            a: Layout::rows(k, m * k),
            b: Layout::rows(n, k * n),
            c: Layout::rows(n, m * n),
            alpha: 1.0,
            beta: 0.0,
        };
        let mut c = vec![0.0; batch * m * n];
        // cuBLAS's A is the row-major B and vice versa.
        emulate(
            &ColumnMajorCall::new(&p).expect("fits"),
            &b,
            &a,
            &mut c,
            1.0,
            0.0,
        );
        for i in 0..batch {
            for r in 0..m {
                for col in 0..n {
                    let want: f32 = (0..k)
                        .map(|p| a[i * m * k + r * k + p] * b[i * k * n + p * n + col])
                        .sum();
                    assert_eq!(c[i * m * n + r * n + col], want, "batch {i} ({r}, {col})");
                }
            }
        }
    }

    #[test]
    fn a_transposed_operand_with_pitch_and_offset_maps_onto_cublas() {
        // x [m, k] times wᵀ where w [n, k] is stored as is (a linear layer), written into
        // columns 1.. of a wider C with pitch n + 3.
        let (m, k, n) = (3, 4, 5);
        let (x, w) = (values(m * k, 3), values(n * k, 4));
        let pitch = n + 3;
        let p = RowMajorProduct {
            m,
            n,
            k,
            batch: 1,
            a: Layout::rows(k, 0),
            b: Layout {
                offset: 0,
                ld: k,
                batch_stride: 0,
                transposed: true,
            },
            c: Layout {
                offset: 1,
                ld: pitch,
                batch_stride: 0,
                transposed: false,
            },
            alpha: 0.5,
            beta: 0.0,
        };
        let mut c = vec![-1.0; 1 + m * pitch];
        emulate(
            &ColumnMajorCall::new(&p).expect("fits"),
            &w,
            &x,
            &mut c,
            0.5,
            0.0,
        );
        for (i, &got) in c.iter().enumerate().skip(1) {
            let (r, col) = ((i - 1) / pitch, (i - 1) % pitch);
            if col < n {
                let want: f32 = 0.5 * (0..k).map(|p| x[r * k + p] * w[col * k + p]).sum::<f32>();
                assert_eq!(got, want, "({r}, {col})");
            } else {
                assert_eq!(got, -1.0, "padding element {i} was written");
            }
        }
        assert_eq!(c[0], -1.0, "the element before the offset was written");
    }

    #[test]
    fn sizes_past_32_bits_are_shape_errors() {
        let p = RowMajorProduct {
            m: 1 << 31,
            n: 1,
            k: 1,
            batch: 1,
            a: Layout::rows(1, 0),
            b: Layout::rows(1, 0),
            c: Layout::rows(1, 0),
            alpha: 1.0,
            beta: 0.0,
        };
        assert!(ColumnMajorCall::new(&p).is_err());
    }
}
