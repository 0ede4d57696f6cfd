//! Products of bf16-stored weights on the f32 engine, for [`Precision::Bf16`](super::Precision::Bf16)
//! on a CPU without bf16 arithmetic (no avx512_bf16): the memory of bf16, the speed of f32.
//!
//! Such weights are kept in plain bf16 rows ([`PLAIN_ROWS`](super::bf16::PLAIN_ROWS)). A product
//! widens its weight to f32 one block of rows at a time, into a buffer its thread keeps from
//! call to call, and hands that block to the f32 engine straight away, while it is still in
//! cache. The whole weight never exists in f32: widening it whole per product (the first
//! version) wrote and re-read up to 59 MB per layer through memory and mapped a fresh buffer
//! for it, which made a UNet step 1.12× slower than f32's; a block costs 2 bytes read per value
//! from memory (f32 reads 4) and its 4-byte copy stays in L2/L3.

use std::cell::RefCell;

use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::bf16::PairPanels;
use super::gemm::{Parallelism, sgemm};
use crate::error::{Error, Result};

/// About this many bytes of widened weight per block: large enough that the engine runs at full
/// speed on it and re-packs the other operand rarely, small enough to stay in L3 between being
/// written and being packed. Measured with `widened_speed` below (Zen 3, 2 threads, load ~3):
/// a 16×16 UNet conv panel `[1280, 11520] · [11520, 96]` took 1.24× f32's time with 1 MiB
/// blocks, 1.39× with 4 MiB, 1.10× with 16 MiB; the linear shapes were 0.74–1.55× with 1 MiB
/// and 0.82–1.28× with 16 MiB (noisy). Each thread keeps one such buffer.
const BLOCK_BYTES: usize = 16 << 20;
/// Weight rows per block are a multiple of this (the engine's register tiles divide it).
const ROW_ALIGN: usize = 16;
/// Columns of the right operand per task when a product is threaded: each task re-widens its
/// weight block, so a block should serve this many columns at least.
const MIN_TASK_COLS: usize = 512;
/// Tasks per thread when a product is threaded, so a core lost to another process for a while
/// does not hold up the whole product.
const TASKS_PER_THREAD: usize = 4;

thread_local! {
    /// Each thread's widened block, kept between calls (no allocation or page mapping per
    /// product). Only touched by [`with_widened_rows`], which runs no nested parallel work.
    static WIDENED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c ← w · b + beta·c` for `w [rows, k]` in plain bf16 rows, `b [k, cols]`, `c [rows, cols]`
/// (any strides). With [`Parallelism::Parallel`] the blocks of `w`'s rows and of `b`'s columns
/// are spread over the rayon pool.
pub(crate) fn product(
    w: &PairPanels,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
    parallelism: Parallelism,
) -> Result<()> {
    product_in_blocks(w, b, beta, c, parallelism, BLOCK_BYTES)
}

/// `out [rows, n] = x [rows, k] · wᵀ + beta·out` for a linear weight `w [n, k]` in plain bf16
/// rows: the same product transposed (`outᵀ = w · xᵀ`), threaded.
pub(crate) fn linear(
    x: ArrayView2<'_, f32>,
    w: &PairPanels,
    beta: f32,
    out: ArrayViewMut2<'_, f32>,
) -> Result<()> {
    product(w, x.t(), beta, out.reversed_axes(), Parallelism::Parallel)
}

/// A right operand `b` and the product `c` it goes to.
pub(crate) type Operand<'a> = (ArrayView2<'a, f32>, ArrayViewMut2<'a, f32>);

/// `c_i ← w · b_i + beta·c_i` for several right operands `b_i [k, cols_i]` sharing the weight
/// `w [rows, k]` (plain bf16 rows), threaded over blocks of `w`'s rows: each block is widened
/// once for all of them (a conv's images), where one [`product`] per operand would widen the
/// whole weight once each.
pub(crate) fn shared_products(w: &PairPanels, operands: Vec<Operand<'_>>, beta: f32) -> Result<()> {
    shared_products_in_blocks(w, operands, beta, BLOCK_BYTES)
}

/// [`shared_products`] with blocks of at most `block_bytes` of widened weight.
fn shared_products_in_blocks(
    w: &PairPanels,
    operands: Vec<Operand<'_>>,
    beta: f32,
    block_bytes: usize,
) -> Result<()> {
    let (rows, k) = (w.rows(), w.k());
    for (b, c) in &operands {
        if !w.is_plain_rows() || b.nrows() != k || c.dim() != (rows, b.ncols()) {
            return Err(shape_error(w, b, c));
        }
    }
    let total_cols: usize = operands.iter().map(|(b, _)| b.ncols()).sum();
    if rows == 0 || total_cols == 0 {
        return Ok(());
    }
    // As in `product_in_blocks`: columns first, in blocks of at least MIN_TASK_COLS, then
    // smaller row blocks if that leaves too few tasks. Cutting only the rows (the first
    // version) made every task stream all of `b`: a VAE 1×1 conv at 512² (`b` 268 MB) ran
    // 5× slower than f32.
    let want = TASKS_PER_THREAD * rayon::current_num_threads();
    let col_blocks = total_cols.div_ceil(MIN_TASK_COLS).clamp(1, want);
    let block_cols = total_cols.div_ceil(col_blocks);
    let groups = column_groups(operands, block_cols);
    let row_blocks = want.div_ceil(groups.len());
    let block_rows = (block_bytes / (k.max(1) * std::mem::size_of::<f32>()))
        .min(rows.div_ceil(row_blocks))
        .next_multiple_of(ROW_ALIGN)
        .max(ROW_ALIGN);
    // A task: the first row of its block and every operand piece's rows of c in it.
    let mut tasks: Vec<(usize, Vec<Operand<'_>>)> = Vec::new();
    for group in groups {
        let mut row_tasks: Vec<(usize, Vec<Operand<'_>>)> = (0..rows)
            .step_by(block_rows)
            .map(|first| (first, Vec::new()))
            .collect();
        for (b, mut rest) in group {
            for task in &mut row_tasks {
                let (c_rows, tail) = split(rest, Axis(0), block_rows);
                task.1.push((b, c_rows));
                rest = tail;
            }
        }
        tasks.extend(row_tasks);
    }
    tasks.into_par_iter().try_for_each(|(first, operands)| {
        let len = block_rows.min(rows - first);
        with_widened_rows(w, first, len, |w_block| {
            operands
                .into_iter()
                .try_for_each(|(b, c)| sgemm(1.0, w_block, b, beta, c, Parallelism::Serial))
        })
    })
}

/// The operands cut into pieces of at most `block_cols` columns, consecutive pieces gathered
/// into groups of at most `block_cols` columns in all: a group's tasks widen each block of
/// weight rows once for all its pieces (a conv's small images share one).
fn column_groups(operands: Vec<Operand<'_>>, block_cols: usize) -> Vec<Vec<Operand<'_>>> {
    let mut groups: Vec<Vec<Operand<'_>>> = Vec::new();
    let mut group_cols = block_cols;
    for (mut b, mut c) in operands {
        while b.ncols() > 0 {
            let take = block_cols.min(b.ncols());
            let (b_piece, b_rest) = b.split_at(Axis(1), take);
            let (c_piece, c_rest) = split(c, Axis(1), take);
            if group_cols + take > block_cols {
                groups.push(Vec::new());
                group_cols = 0;
            }
            if let Some(group) = groups.last_mut() {
                group.push((b_piece, c_piece));
            }
            group_cols += take;
            (b, c) = (b_rest, c_rest);
        }
    }
    groups
}

/// The shape error of a product whose operands do not fit (or whose weight is not in plain
/// rows).
fn shape_error(w: &PairPanels, b: &ArrayView2<'_, f32>, c: &ArrayViewMut2<'_, f32>) -> Error {
    Error::shape(
        "widened bf16 product",
        format!(
            "w [{}, {}] (plain rows: {}) × b {:?} does not fit c {:?}",
            w.rows(),
            w.k(),
            w.is_plain_rows(),
            b.shape(),
            c.shape()
        ),
    )
}

/// [`product`] with blocks of about `block_bytes` of widened weight (the tests make them
/// small, to have many).
fn product_in_blocks(
    w: &PairPanels,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
    parallelism: Parallelism,
    block_bytes: usize,
) -> Result<()> {
    let (rows, k, cols) = (w.rows(), w.k(), b.ncols());
    if !w.is_plain_rows() || b.nrows() != k || c.dim() != (rows, cols) {
        return Err(shape_error(w, &b, &c));
    }
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let mut block_rows = (block_bytes / (k.max(1) * std::mem::size_of::<f32>()))
        .next_multiple_of(ROW_ALIGN)
        .max(ROW_ALIGN);
    let mut block_cols = cols;
    let threads = match parallelism {
        Parallelism::Serial => 1,
        Parallelism::Parallel => rayon::current_num_threads(),
    };
    if threads > 1 {
        // Columns in blocks of at least MIN_TASK_COLS, then smaller row blocks if that still
        // leaves too few tasks for the threads.
        let want = TASKS_PER_THREAD * threads;
        let col_blocks = cols.div_ceil(MIN_TASK_COLS).clamp(1, want);
        block_cols = cols.div_ceil(col_blocks);
        let row_blocks = want.div_ceil(col_blocks);
        block_rows = block_rows.min(rows.div_ceil(row_blocks).next_multiple_of(ROW_ALIGN));
    }
    let tasks = blocks(c, block_rows, block_cols);
    let run = |(first_row, first_col, c): (usize, usize, ArrayViewMut2<'_, f32>)| {
        let b = b.slice(ndarray::s![.., first_col..first_col + c.ncols()]);
        with_widened_rows(w, first_row, c.nrows(), |w_block| {
            sgemm(1.0, w_block, b, beta, c, Parallelism::Serial)
        })
    };
    if threads > 1 && tasks.len() > 1 {
        tasks.into_par_iter().try_for_each(run)
    } else {
        tasks.into_iter().try_for_each(run)
    }
}

/// `c` cut into disjoint `[≤block_rows, ≤block_cols]` views, each with its first row and
/// column, row block by row block.
fn blocks<'a>(
    c: ArrayViewMut2<'a, f32>,
    block_rows: usize,
    block_cols: usize,
) -> Vec<(usize, usize, ArrayViewMut2<'a, f32>)> {
    let mut tasks = Vec::new();
    let mut rest_rows = c;
    let mut first_row = 0;
    while rest_rows.nrows() > 0 {
        let (mut row_block, tail) = split(rest_rows, Axis(0), block_rows);
        let mut first_col = 0;
        while row_block.ncols() > 0 {
            let (block, tail) = split(row_block, Axis(1), block_cols);
            let width = block.ncols();
            tasks.push((first_row, first_col, block));
            first_col += width;
            row_block = tail;
        }
        first_row += block_rows;
        rest_rows = tail;
    }
    tasks
}

/// The first `len` (or fewer, if that is all) indices of `axis`, and the rest.
fn split(
    v: ArrayViewMut2<'_, f32>,
    axis: Axis,
    len: usize,
) -> (ArrayViewMut2<'_, f32>, ArrayViewMut2<'_, f32>) {
    let at = len.min(v.len_of(axis));
    v.split_at(axis, at)
}

/// `f` of rows `first..first + len` of `w` widened to f32, as a row-major `[len, k]` view in
/// this thread's buffer.
fn with_widened_rows<R>(
    w: &PairPanels,
    first: usize,
    len: usize,
    f: impl FnOnce(ArrayView2<'_, f32>) -> R,
) -> R {
    WIDENED.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        let values = len * w.k();
        if buffer.len() < values {
            buffer.resize(values, 0.0);
        }
        let block = &mut buffer[..values];
        w.widen_rows(first, block);
        f(ArrayView2::from_shape((len, w.k()), &*block).expect("len · k values"))
    })
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;
    use crate::cpu::bf16::PLAIN_ROWS;
    use crate::cpu::bf16::tests::random;

    /// `dense · b + beta·start` on the f32 engine: the expected value of a widened product.
    fn plain_product(
        dense: &Array2<f32>,
        b: &Array2<f32>,
        beta: f32,
        start: &Array2<f32>,
    ) -> Array2<f32> {
        let mut want = start.clone();
        sgemm(
            1.0,
            dense.view(),
            b.view(),
            beta,
            want.view_mut(),
            Parallelism::Serial,
        )
        .expect("shapes fit");
        want
    }

    /// Against the f32 engine on the whole weight widened the straightforward way
    /// (`to_rows`), for one and several blocks of rows and columns, both parallelisms, with
    /// and without `beta`, and as a linear layer.
    #[test]
    fn block_products_match_the_whole_widened_weight() {
        for &(rows, k, cols) in &[(1, 1, 1), (37, 71, 1300), (300, 20, 45), (64, 512, 700)] {
            let w = PairPanels::from_rows(&random(rows * k, 1), rows, k, PLAIN_ROWS);
            let dense = Array2::from_shape_vec((rows, k), w.to_rows()).expect("rows · k");
            let b = Array2::from_shape_vec((k, cols), random(k * cols, 2)).expect("k · cols");
            let start = Array2::from_shape_vec((rows, cols), random(rows * cols, 3)).expect("c");
            for beta in [0.0, 1.0] {
                let want = plain_product(&dense, &b, beta, &start);
                for parallelism in [Parallelism::Serial, Parallelism::Parallel] {
                    for block_bytes in [1, 4096, BLOCK_BYTES] {
                        let mut got = start.clone();
                        product_in_blocks(
                            &w,
                            b.view(),
                            beta,
                            got.view_mut(),
                            parallelism,
                            block_bytes,
                        )
                        .expect("shapes fit");
                        let worst = (&got - &want).iter().fold(0f32, |m, d| m.max(d.abs()));
                        assert!(
                            worst <= 1e-5 * (k as f32).sqrt(),
                            "({rows},{k},{cols}) beta {beta} {parallelism:?} {block_bytes} B: {worst}"
                        );
                    }
                }
            }
            // As a linear layer: out [cols, rows] = bᵀ · wᵀ.
            let mut got = Array2::from_elem((cols, rows), f32::NAN);
            linear(b.t(), &w, 0.0, got.view_mut()).expect("shapes fit");
            let want = plain_product(&dense, &b, 0.0, &Array2::zeros((rows, cols)));
            let worst = (&got - &want.t()).iter().fold(0f32, |m, d| m.max(d.abs()));
            assert!(
                worst <= 1e-5 * (k as f32).sqrt(),
                "linear ({rows},{k},{cols}): {worst}"
            );
        }
    }

    #[test]
    fn shapes_that_do_not_fit_and_pair_panels_are_errors() {
        let w = PairPanels::from_rows(&[1.0; 6], 2, 3, PLAIN_ROWS);
        let b = Array2::<f32>::zeros((4, 5));
        let mut c = Array2::<f32>::zeros((2, 5));
        assert!(product(&w, b.view(), 0.0, c.view_mut(), Parallelism::Serial).is_err());
        let pairs = PairPanels::from_rows(&[1.0; 8], 2, 4, crate::cpu::bf16::MR);
        assert!(product(&pairs, b.view(), 0.0, c.view_mut(), Parallelism::Serial).is_err());
        // One operand that does not fit among several.
        let fits = Array2::<f32>::zeros((3, 5));
        let mut other = Array2::<f32>::zeros((2, 5));
        let operands = vec![(fits.view(), other.view_mut()), (b.view(), c.view_mut())];
        assert!(shared_products(&w, operands, 0.0).is_err());
    }

    /// Several operands sharing the weight, against one plain f32 product each: one and
    /// several row blocks (block sizes 1 B, 4 KiB, the default), with and without β, operands
    /// of different widths (the widest one cut into column blocks, the narrow ones sharing a
    /// group).
    #[test]
    fn shared_products_match_one_product_each() {
        let (rows, k) = (70, 33);
        let w = PairPanels::from_rows(&random(rows * k, 1), rows, k, PLAIN_ROWS);
        let dense = Array2::from_shape_vec((rows, k), w.to_rows()).expect("rows · k");
        let bs: Vec<Array2<f32>> = [1, 40, 7, 1500]
            .iter()
            .zip(2..)
            .map(|(&cols, seed)| {
                Array2::from_shape_vec((k, cols), random(k * cols, seed)).expect("k · cols")
            })
            .collect();
        for beta in [0.0, 1.0] {
            for block_bytes in [1, 4096, BLOCK_BYTES] {
                let starts: Vec<Array2<f32>> = bs
                    .iter()
                    .zip(10..)
                    .map(|(b, seed)| {
                        Array2::from_shape_vec((rows, b.ncols()), random(rows * b.ncols(), seed))
                            .expect("c")
                    })
                    .collect();
                let mut got = starts.clone();
                let operands = bs
                    .iter()
                    .map(|b| b.view())
                    .zip(got.iter_mut().map(|c| c.view_mut()));
                shared_products_in_blocks(&w, operands.collect(), beta, block_bytes)
                    .expect("shapes fit");
                for ((b, start), got) in bs.iter().zip(&starts).zip(&got) {
                    let want = plain_product(&dense, b, beta, start);
                    let worst = (got - &want).iter().fold(0f32, |m, d| m.max(d.abs()));
                    assert!(
                        worst <= 1e-5,
                        "beta {beta}, {block_bytes} B, {:?}: {worst}",
                        b.dim()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use std::time::Instant;

    use ndarray::Array2;

    use super::*;
    use crate::cpu::bf16::PLAIN_ROWS;

    /// Median seconds of `runs` calls of `f`.
    fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[runs / 2]
    }

    /// The f32 engine on an f32 weight against the same product with the weight in bf16 plain
    /// rows, widened in blocks of several sizes, interleaved; the best of three medians of 5:
    /// `cargo test --release -p sd-core --lib widened_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, not a check"]
    fn widened_speed() {
        // (weight rows, k, columns of b, parallelism): a 16×16 UNet conv's im2col panel (run
        // serially, one panel per task) and linear layers of the UNet's three levels.
        let shapes = [
            (1280, 11520, 96, Parallelism::Serial),
            (640, 5760, 184, Parallelism::Serial),
            (2560, 320, 8192, Parallelism::Parallel),
            (320, 1280, 8192, Parallelism::Parallel),
            (640, 2560, 2048, Parallelism::Parallel),
            (1280, 5120, 512, Parallelism::Parallel),
        ];
        for (rows, k, cols, parallelism) in shapes {
            let w32 = Array2::from_shape_vec((rows, k), vec![0.01f32; rows * k]).expect("w");
            let w16 = PairPanels::from_rows(&vec![0.01f32; rows * k], rows, k, PLAIN_ROWS);
            let b = Array2::from_shape_vec((k, cols), vec![0.5f32; k * cols]).expect("b");
            let mut c = Array2::<f32>::zeros((rows, cols));
            let mut f32_times = Vec::new();
            let sizes = [1 << 20, 4 << 20, 16 << 20];
            let mut bf16_times = vec![Vec::new(); sizes.len()];
            for _ in 0..3 {
                f32_times.push(median_secs(5, || {
                    sgemm(1.0, w32.view(), b.view(), 0.0, c.view_mut(), parallelism).expect("fits")
                }));
                for (times, &bytes) in bf16_times.iter_mut().zip(&sizes) {
                    times.push(median_secs(5, || {
                        product_in_blocks(&w16, b.view(), 0.0, c.view_mut(), parallelism, bytes)
                            .expect("fits")
                    }));
                }
            }
            let best = |t: &Vec<f64>| t.iter().copied().fold(f64::INFINITY, f64::min) * 1e3;
            let f32_ms = best(&f32_times);
            print!("({rows},{k},{cols}) {parallelism:?}: f32 {f32_ms:.1} ms");
            for (times, bytes) in bf16_times.iter().zip(sizes) {
                let ms = best(times);
                print!(
                    " | bf16 {} MiB {ms:.1} ms ({:.2}×)",
                    bytes >> 20,
                    ms / f32_ms
                );
            }
            println!();
        }
    }
}
