//! The GEMM engine under linalg, conv and attention: `c ← α·a·b + β·c` on strided f32 views.
//!
//! The engine is the `gemm` crate (0.19), chosen by measurement (`cargo bench --bench gemm
//! --features bench-openblas`) on the project's 2-core AMD EPYC (Zen 4, AVX-512) machines,
//! 2 threads, GFLOP/s over wall time in a quiet spell (two runs):
//!
//! | (m, k, n)          | matrixmultiply | gemm, own threads | OpenBLAS 0.3.21 | this module |
//! |--------------------|----------------|-------------------|-----------------|-------------|
//! | 4096, 4096, 4096   | 178–179        | 167–169           | 196–198         | 193–199     |
//! | 4096, 320, 320     | 86–98          | 153–194           | 161–181         | 159–185     |
//! | 4096, 2880, 320    | 161–164        | 149–162           | 169–172         | 183–200     |
//! | 1024, 5760, 640    | 179–182        | 171–205           | 199–201         | 196–198     |
//! | 77, 768, 768       | 71–86          | 155–192           | 138–162         | 156–188     |
//!
//! OpenBLAS and the `gemm` crate's AVX-512 kernels are within a few percent of each other on
//! large products (≈ 100 GFLOP/s per core); the `gemm` crate is clearly ahead on small ones
//! like CLIP's, and matrixmultiply (AVX2 kernels, its own thread pool) trails everywhere. The
//! `gemm` crate is also pure Rust: no system library to install, kernels picked at run time.
//!
//! Threading is ours, not the engine's: a large product is cut into blocks of rows or columns
//! that rayon runs as independent single-threaded products ([`Parallelism::Parallel`]) —
//! "this module" above. That matched or beat the engine's own threading, which synchronises its
//! threads inside the product, on every shape, and a core lost to another process for a while
//! only delays the blocks it holds.
//!
//! Operands are ndarray views, so any row/column strides work (a transposed weight is just
//! `w.t()`), bounds are checked by ndarray when the view is made, and a mutable view can be
//! split into disjoint pieces (`split_at`, `axis_chunks_iter_mut`) that rayon tasks fill side by
//! side, which is how conv2d computes its output panels in parallel.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, s};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// How many threads one product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    /// Only the calling thread. Use this inside rayon parallel loops (per batch, per panel), so
    /// the loop, not the product, owns the cores.
    Serial,
    /// Every thread of the current rayon pool (the global one: all cores unless
    /// `RAYON_NUM_THREADS` says otherwise). The engine itself stays single-threaded for
    /// products too small to gain from it.
    Parallel,
}

/// `c ← alpha·a·b + beta·c` for `a [m, k]`, `b [k, n]`, `c [m, n]`.
///
/// With `beta == 0` the old contents of `c` are ignored, not multiplied (NaN or garbage in `c`
/// does not leak through), so `c` may be a freshly allocated buffer. With `k == 0` the product
/// term is zero. Shapes that don't fit together give [`Error::Shape`].
pub fn sgemm(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
    parallelism: Parallelism,
) -> Result<()> {
    let (m, k) = a.dim();
    let n = b.ncols();
    if b.nrows() != k || c.dim() != (m, n) {
        return Err(Error::shape(
            "sgemm",
            format!(
                "a {:?} × b {:?} does not fit c {:?}",
                a.shape(),
                b.shape(),
                c.shape()
            ),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        scale_in_place(&mut c, beta);
        return Ok(());
    }
    // The engine's handling of negative strides is only partial; such views are rare (an
    // inverted axis), so make them plain copies rather than reason about the corner cases.
    if has_negative_stride(a.strides()) {
        return sgemm(
            alpha,
            a.as_standard_layout().view(),
            b,
            beta,
            c,
            parallelism,
        );
    }
    if has_negative_stride(b.strides()) {
        return sgemm(
            alpha,
            a,
            b.as_standard_layout().view(),
            beta,
            c,
            parallelism,
        );
    }
    if has_negative_stride(c.strides()) {
        let mut tmp = Array2::zeros((m, n));
        if beta != 0.0 {
            tmp.assign(&c);
        }
        sgemm(alpha, a, b, beta, tmp.view_mut(), parallelism)?;
        c.assign(&tmp);
        return Ok(());
    }

    let threads = rayon::current_num_threads();
    if parallelism == Parallelism::Parallel
        && threads > 1
        && m.saturating_mul(k).saturating_mul(n) >= SPLIT_MIN_MACS
    {
        split_over_threads(alpha, a, b, beta, c, threads);
    } else {
        engine_gemm(alpha, a, b, beta, c);
    }
    Ok(())
}

/// Products with fewer multiply-adds run on one thread: splitting them costs more in task
/// overhead and operand re-packing than it gains (the engine's own threshold is 48·48·256).
const SPLIT_MIN_MACS: usize = 64 * 64 * 256;
/// Blocks per thread: more than one, so that a core taken by another process for a while
/// (this is a shared 2-core machine) does not hold up the whole product.
const BLOCKS_PER_THREAD: usize = 4;
/// The narrowest block worth a task: each block re-packs the whole operand it shares with the
/// others (for a row block, all of `b`), which costs about as much as a 256-wide block's
/// arithmetic takes to hide on (1024, 5760, 640).
const MIN_BLOCK: usize = 256;

/// Cut `c` into blocks of rows (or columns, whichever dimension is longer) and compute each
/// block as an independent single-threaded product on the rayon pool.
///
/// Measured faster and steadier here than the engine's own threading, which synchronises its
/// threads inside the product (benches/gemm.rs, "gemm 0.19" vs "sd-core"); independent blocks
/// only meet at the end.
fn split_over_threads(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
    threads: usize,
) {
    let (m, n) = c.dim();
    let (axis, len) = if m >= n { (Axis(0), m) } else { (Axis(1), n) };
    // A whole number of blocks per thread, as many as allowed, so the threads finish together.
    let per_thread = (len / (threads * MIN_BLOCK)).clamp(1, BLOCKS_PER_THREAD);
    let block = len.div_ceil(threads * per_thread);
    let blocks = c
        .axis_chunks_iter_mut(axis, block)
        .into_par_iter()
        .enumerate();
    if axis == Axis(0) {
        blocks.for_each(|(i, c_rows)| {
            let a_rows = a.slice(s![i * block..i * block + c_rows.nrows(), ..]);
            engine_gemm(alpha, a_rows, b, beta, c_rows);
        });
    } else {
        blocks.for_each(|(j, c_cols)| {
            let b_cols = b.slice(s![.., j * block..j * block + c_cols.ncols()]);
            engine_gemm(alpha, a, b_cols, beta, c_cols);
        });
    }
}

/// One single-threaded call of the engine. The caller checked the shapes, that no stride is
/// negative and that no dimension is zero.
fn engine_gemm(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let (sa, sb, sc) = (a.strides(), b.strides(), c.strides().to_vec());
    // SAFETY: the pointers and strides describe live ndarray views of exactly the shapes
    // passed (ndarray checked their bounds when the views were made), all strides are
    // non-negative, and `c` is a mutable view, which ndarray guarantees has no two indices on
    // one element, so the engine's writes neither alias each other nor `a`/`b` (those are
    // shared borrows, which cannot coexist with the unique borrow behind `c`).
    // The engine computes dst ← alpha'·dst + beta'·lhs·rhs (its names are swapped relative to
    // BLAS) and ignores dst entirely when read_dst is false.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            sc[1],
            sc[0],
            beta != 0.0,
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn has_negative_stride(strides: &[isize]) -> bool {
    strides.iter().any(|&s| s < 0)
}

/// `c ← beta·c`, with `beta == 0` meaning "set to zero" (so NaN does not survive).
fn scale_in_place(c: &mut ArrayViewMut2<'_, f32>, beta: f32) {
    if beta == 0.0 {
        c.fill(0.0);
    } else {
        c.mapv_inplace(|v| v * beta);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, array};

    use super::{Parallelism, sgemm};

    #[test]
    fn small_product_matches_hand_computation() {
        let a = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let b = array![[1.0f32, 0.0], [0.0, 1.0], [2.0, -1.0]];
        let mut c = Array2::from_elem((2, 2), f32::NAN);
        sgemm(
            1.0,
            a.view(),
            b.view(),
            0.0,
            c.view_mut(),
            Parallelism::Serial,
        )
        .expect("shapes fit");
        assert_eq!(c, array![[7.0, -1.0], [16.0, -1.0]]);
    }

    #[test]
    fn alpha_beta_and_transposed_views() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0]];
        let mut c = array![[1.0f32, 1.0], [1.0, 1.0]];
        // c ← 2·a·aᵀ + 3·c; a·aᵀ = [[5, 11], [11, 25]].
        sgemm(
            2.0,
            a.view(),
            a.t(),
            3.0,
            c.view_mut(),
            Parallelism::Parallel,
        )
        .expect("shapes fit");
        assert_eq!(c, array![[13.0, 25.0], [25.0, 53.0]]);
    }

    #[test]
    fn empty_inner_dimension_zeroes_or_scales() {
        let a = Array2::<f32>::zeros((2, 0));
        let b = Array2::<f32>::zeros((0, 3));
        let mut c = Array2::from_elem((2, 3), f32::NAN);
        sgemm(
            1.0,
            a.view(),
            b.view(),
            0.0,
            c.view_mut(),
            Parallelism::Serial,
        )
        .expect("shapes fit");
        assert!(c.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let a = Array2::<f32>::zeros((2, 3));
        let b = Array2::<f32>::zeros((4, 5));
        let mut c = Array2::<f32>::zeros((2, 5));
        let e = sgemm(
            1.0,
            a.view(),
            b.view(),
            0.0,
            c.view_mut(),
            Parallelism::Serial,
        );
        assert!(e.is_err());
    }

    #[test]
    fn inverted_axes_are_handled() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0]];
        let mut flipped = a.clone();
        flipped.invert_axis(ndarray::Axis(0)); // [[3, 4], [1, 2]]
        let mut c = Array2::zeros((2, 2));
        sgemm(
            1.0,
            flipped.view(),
            a.view(),
            0.0,
            c.view_mut(),
            Parallelism::Serial,
        )
        .expect("shapes fit");
        assert_eq!(c, array![[15.0, 22.0], [7.0, 10.0]]);
    }
}
