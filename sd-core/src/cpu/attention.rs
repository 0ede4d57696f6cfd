//! Blockwise scaled dot-product attention with an online (running max / running sum) softmax.
//!
//! One rayon task per (batch, block of queries) handles every head in turn. For a
//! head it walks the keys in blocks of `KEY_BLOCK`:
//!
//! ```text
//! S   = scale · Q Kᵀ                        (query block × KEY_BLOCK, one small GEMM)
//! m'  = max(m, rowmax S)                    running row maximum
//! P   = exp(S − m')                         in place over S
//! l   = l · exp(m − m') + rowsum P          running softmax denominator
//! O   = O · exp(m − m') + P V               (one small GEMM accumulating into O)
//! ```
//!
//! and finally writes `O / l`. Nothing larger than `query block × (KEY_BLOCK + d)` floats is
//! held per task, whatever the sequence lengths. Heads are interleaved in the feature dim
//! (head `h` owns features `h·d .. (h+1)·d`), so Q, K, V and the output are read and written in
//! place through strides, never split into per-head copies.
//!
//! Three implementations of the products ([`HeadProducts`]): f32 on the register-tiled AVX2
//! kernels of [`attention_avx2`] (heads up to 160 wide: every UNet and CLIP head), f32 on the
//! GEMM engine otherwise (the VAE's 512-wide head, a CPU without AVX2), and for
//! [`Precision::Bf16`] the bf16 engine with every tile transposed (`Sᵀ = K Qᵀ`, `Oᵀ += Vᵀ Pᵀ`),
//! keys and values packed once per call. Self-attention [2, 4096, 320] × 8 heads
//! (`cargo run --release --example cpu_ops`): bf16 234 ms (270 ms with row-major scores, whose
//! packing of P cost as much as its product) on a Zen 4, f32 there 389 / 325 ms on the AVX2
//! kernels against 564 / 495 ms on the GEMM engine (`-- --only attention`, interleaved with
//! `SD_ATTENTION_KERNELS=off`); on a Zen 3 (AVX2) the GEMM engine took 780 ms, the AVX2
//! kernels 540 ms.

use ndarray::{ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use super::attention_avx2::{self, HeadPanels};
use super::bf16::{self, PairPanels};
use super::elementwise::{exp, vectorized};
use super::gemm::{Parallelism, sgemm};
use super::norm::{exp_shifted_in_place, row_max};
use super::{CpuTensor, Precision};
use crate::backend::TensorInfo;
use crate::error::Result;
use crate::shapes::AttentionShape;

/// Bounds on the queries per task. Each task re-packs every K/V block for the GEMM engine, so
/// larger blocks pack less (packing took 40% of SD self-attention's time with 64-row blocks,
/// 25% with 256, which ran 22% faster overall) but leave fewer tasks to share out;
/// 256 × (256 + 512) floats of scratch still fit in L2.
const MIN_QUERY_BLOCK: usize = 64;
const MAX_QUERY_BLOCK: usize = 256;

/// Queries per task: as large as allowed while leaving each thread ~4 tasks to balance load.
fn query_block(batch_rows: usize) -> usize {
    (batch_rows / (4 * rayon::current_num_threads())).clamp(MIN_QUERY_BLOCK, MAX_QUERY_BLOCK)
}

/// Keys per step of the online softmax (also the largest score tile held at once). 128 ran SD's
/// self-attention 2 % faster than 256 and VAE attention 10 % faster; 512 was 10 % slower
/// (`cargo run --release --example cpu_ops`, after moving these products from matrixmultiply's
/// AVX2 kernels to the gemm crate's AVX-512 ones, which alone took 382 → 330 ms).
const KEY_BLOCK: usize = 128;

pub(crate) fn attention(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    heads: usize,
    scale: f32,
    causal: bool,
    precision: Precision,
) -> Result<CpuTensor> {
    let shape = AttentionShape::check(q.shape(), k.shape(), v.shape(), heads)?;
    let features = shape.features();
    let out_shape = q.shape().to_vec();
    let mut out = vec![0.0; q.numel()];
    if out.is_empty() {
        return CpuTensor::from_vec(&out_shape, out);
    }
    let batch_q = shape.queries * features;
    let batch_kv = shape.keys * features;
    let (q, k, v) = (q.data(), k.data(), v.data());
    let query_rows = query_block(out.len() / features);

    out.par_chunks_mut(batch_q)
        .zip(q.par_chunks(batch_q))
        .enumerate()
        .for_each(|(b, (out, q))| {
            let keys = &k[b * batch_kv..(b + 1) * batch_kv];
            let values = &v[b * batch_kv..(b + 1) * batch_kv];
            // In bf16, and in f32 on the AVX2 kernels, each head's keys and values are packed
            // once for all query blocks.
            let packed: Vec<PackedHead> = match precision {
                // The backend resolves Auto before it gets here.
                Precision::F32 | Precision::Auto => Vec::new(),
                Precision::Bf16 => (0..heads)
                    .into_par_iter()
                    .map(|head| PackedHead::new(&shape, head, keys, values))
                    .collect(),
            };
            let d = shape.head_dim;
            let panels: Vec<HeadPanels> = if packed.is_empty() && attention_avx2::applies(d) {
                (0..heads)
                    .into_par_iter()
                    .map(|head| HeadPanels::new(keys, values, shape.keys, d, features, head * d))
                    .collect()
            } else {
                Vec::new()
            };
            let task_len = query_rows * features;
            out.par_chunks_mut(task_len)
                .zip(q.par_chunks(task_len))
                .enumerate()
                .for_each_init(
                    || Scratch::new(query_rows, shape.head_dim),
                    |scratch, (block, (out, q))| {
                        let task = QueryBlock {
                            first_query: block * query_rows,
                            queries: q,
                            keys,
                            values,
                        };
                        for head in 0..heads {
                            let queries = task.queries.len() / features;
                            match packed.get(head) {
                                None => {
                                    let mut products = F32Products {
                                        task: &task,
                                        features,
                                        col: head * d,
                                        d,
                                        scale,
                                        panels: panels.get(head),
                                    };
                                    task.attend(&shape, causal, &mut products, scratch, out);
                                }
                                Some(packed) => {
                                    let q = PairPanels::from_strided_rows(
                                        &task.queries[head * d..],
                                        queries,
                                        d,
                                        features,
                                        bf16::NR,
                                    );
                                    let mut products = Bf16Products {
                                        q,
                                        packed,
                                        scale,
                                        col: head * d,
                                        p_t: PairPanels::from_columns(&[], 0, 0, bf16::NR),
                                    };
                                    task.attend(&shape, causal, &mut products, scratch, out);
                                }
                            }
                        }
                    },
                );
        });
    CpuTensor::from_vec(&out_shape, out)
}

/// Per-task buffers, reused across the heads and key blocks of a task.
#[derive(Debug)]
struct Scratch {
    /// Scores, then probabilities, of one (query block × key block) tile.
    scores: Vec<f32>,
    /// Unnormalised output rows of one head, `query rows × head_dim`.
    acc: Vec<f32>,
    /// Running maximum of each query row's scores.
    row_max: Vec<f32>,
    /// Running sum of each query row's `exp(score − row_max)`.
    row_sum: Vec<f32>,
    /// The factor each row's accumulated output is rescaled by in the current step.
    rescale: Vec<f32>,
}

impl Scratch {
    fn new(query_rows: usize, head_dim: usize) -> Self {
        Scratch {
            scores: vec![0.0; query_rows * KEY_BLOCK],
            acc: vec![0.0; query_rows * head_dim],
            row_max: vec![0.0; query_rows],
            row_sum: vec![0.0; query_rows],
            rescale: vec![1.0; query_rows],
        }
    }
}

/// One task's view: a block of query rows (all heads) and the whole key/value sequences of
/// its batch element.
#[derive(Debug)]
struct QueryBlock<'a> {
    first_query: usize,
    /// `rows × features`, row-major.
    queries: &'a [f32],
    /// `keys × features`.
    keys: &'a [f32],
    values: &'a [f32],
}

impl QueryBlock<'_> {
    /// Attention of this block's queries for one head (the one `products` computes), written
    /// into that head's columns of `out` (`rows × features`).
    fn attend(
        &self,
        shape: &AttentionShape,
        causal: bool,
        products: &mut impl HeadProducts,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) {
        let rows = self.queries.len() / shape.features();
        let acc = &mut scratch.acc[..rows * shape.head_dim];
        let running_max = &mut scratch.row_max[..rows];
        let running_sum = &mut scratch.row_sum[..rows];
        let rescale = &mut scratch.rescale[..rows];
        acc.fill(0.0);
        running_max.fill(f32::NEG_INFINITY);
        running_sum.fill(0.0);

        // Causal: no query of this block sees a key past its last query.
        let key_end = if causal {
            (self.first_query + rows).min(shape.keys)
        } else {
            shape.keys
        };
        let key_block = products.key_block();
        for first_key in (0..key_end).step_by(key_block) {
            let key_count = key_block.min(key_end - first_key);
            let scores = &mut scratch.scores[..rows * key_count];
            products.scores(first_key, key_count, scores);
            let tile = ScoreTile {
                first_query: self.first_query,
                first_key,
                causal,
            };
            products.softmax_step(tile, scores, running_max, running_sum, rescale);
            products.accumulate(first_key, key_count, scores, rescale, acc);
        }
        products.finish(acc, running_sum, out);
    }
}

/// The products of one head's attention and the layouts of its scores and accumulator.
trait HeadProducts {
    /// Keys per step of the online softmax (at most [`KEY_BLOCK`]).
    fn key_block(&self) -> usize {
        KEY_BLOCK
    }
    /// [`ScoreTile::softmax_step`] on this layout's scores.
    fn softmax_step(
        &self,
        tile: ScoreTile,
        scores: &mut [f32],
        running_max: &mut [f32],
        running_sum: &mut [f32],
        rescale: &mut [f32],
    );
    /// `scores = scale · Q Kᵀ` for keys `first_key..first_key + key_count` (`[rows, key_count]`
    /// unless the layout says otherwise).
    fn scores(&mut self, first_key: usize, key_count: usize, scores: &mut [f32]);
    /// `acc = acc · factor + P V` for those keys (`probabilities [rows, key_count]`, one
    /// factor per query row).
    fn accumulate(
        &mut self,
        first_key: usize,
        key_count: usize,
        probabilities: &[f32],
        factors: &[f32],
        acc: &mut [f32],
    );
    /// Multiply each query row's accumulated output by its factor.
    fn rescale(&self, acc: &mut [f32], factors: &[f32]);
    /// [`rescale`](Self::rescale), skipped while every factor is 1 (the row maxima held).
    fn rescale_if_needed(&self, acc: &mut [f32], factors: &[f32]) {
        if factors.iter().any(|&f| f != 1.0) {
            vectorized(
                #[inline(always)]
                || self.rescale(acc, factors),
            );
        }
    }
    /// Write `acc / sum` per query row into the head's columns of `out`.
    fn finish(&self, acc: &[f32], sums: &[f32], out: &mut [f32]);
}

/// f32 products, strided over the interleaved heads, on the AVX2 attention kernels where they
/// apply (the head packed in `panels`), else on the GEMM engine; `acc` is `[rows, d]`.
struct F32Products<'a, 'b> {
    task: &'b QueryBlock<'a>,
    features: usize,
    /// The head's first feature.
    col: usize,
    /// The head's features.
    d: usize,
    scale: f32,
    panels: Option<&'b HeadPanels>,
}

impl F32Products<'_, '_> {
    fn rows(&self) -> usize {
        self.task.queries.len() / self.features
    }
}

impl HeadProducts for F32Products<'_, '_> {
    fn softmax_step(
        &self,
        tile: ScoreTile,
        scores: &mut [f32],
        running_max: &mut [f32],
        running_sum: &mut [f32],
        rescale: &mut [f32],
    ) {
        // Two calls, not a function pointer: each exp loop inlines into its softmax.
        match self.panels {
            Some(_) => vectorized(
                #[inline(always)]
                || {
                    let exp_row = attention_avx2::exp_shifted_in_place;
                    tile.softmax_step(scores, running_max, running_sum, rescale, exp_row)
                },
            ),
            None => vectorized(
                #[inline(always)]
                || {
                    let exp_row = exp_shifted_in_place;
                    tile.softmax_step(scores, running_max, running_sum, rescale, exp_row)
                },
            ),
        }
    }

    fn scores(&mut self, first_key: usize, key_count: usize, scores: &mut [f32]) {
        let (rows, d) = (self.rows(), self.d);
        if let Some(panels) = self.panels {
            let q = attention_avx2::Rows {
                data: &self.task.queries[self.col..],
                rows,
                cols: d,
                stride: self.features,
            };
            attention_avx2::scores(q, panels, first_key, key_count, self.scale, scores);
            return;
        }
        let q = Strided {
            data: &self.task.queries[self.col..],
            rows,
            cols: d,
            row_stride: self.features,
            col_stride: 1,
        };
        let k_transposed = Strided {
            data: &self.task.keys[first_key * self.features + self.col..],
            rows: d,
            cols: key_count,
            row_stride: 1,
            col_stride: self.features,
        };
        gemm(self.scale, q, k_transposed, 0.0, scores, key_count);
    }

    fn accumulate(
        &mut self,
        first_key: usize,
        key_count: usize,
        probabilities: &[f32],
        factors: &[f32],
        acc: &mut [f32],
    ) {
        let d = self.d;
        let values = &self.task.values[first_key * self.features + self.col..];
        if let Some(panels) = self.panels {
            let p = attention_avx2::Rows {
                data: probabilities,
                rows: self.rows(),
                cols: key_count,
                stride: key_count,
            };
            attention_avx2::accumulate(p, panels, first_key, factors, acc);
            return;
        }
        self.rescale_if_needed(acc, factors);
        let probabilities = Strided {
            data: probabilities,
            rows: self.rows(),
            cols: key_count,
            row_stride: key_count,
            col_stride: 1,
        };
        let v = Strided {
            data: values,
            rows: key_count,
            cols: d,
            row_stride: self.features,
            col_stride: 1,
        };
        gemm(1.0, probabilities, v, 1.0, acc, d);
    }

    #[inline(always)]
    fn rescale(&self, acc: &mut [f32], factors: &[f32]) {
        for (acc_row, &f) in acc.chunks_exact_mut(self.d).zip(factors) {
            acc_row.iter_mut().for_each(|a| *a *= f);
        }
    }

    fn finish(&self, acc: &[f32], sums: &[f32], out: &mut [f32]) {
        let (d, col) = (self.d, self.col);
        let out_rows = out.chunks_exact_mut(self.features);
        for ((out_row, acc_row), &l) in out_rows.zip(acc.chunks_exact(d)).zip(sums) {
            let inv = 1.0 / l;
            for (o, &a) in out_row[col..col + d].iter_mut().zip(acc_row) {
                *o = a * inv;
            }
        }
    }
}

/// One head's keys and values in bf16 pair panels, packed once per attention call: keys as the
/// left operand of `K Qᵀ` (panels over keys, pairs over the head's features), values as the
/// left operand of `Vᵀ Pᵀ` (panels over features, pairs over keys); panels of the left width
/// (MR, or row tiles for AMX).
struct PackedHead {
    keys: PairPanels,
    values_t: PairPanels,
}

impl PackedHead {
    fn new(shape: &AttentionShape, head: usize, keys: &[f32], values: &[f32]) -> Self {
        let (d, features, n) = (shape.head_dim, shape.features(), shape.keys);
        let width = bf16::left_width();
        PackedHead {
            keys: PairPanels::from_strided_rows(&keys[head * d..], n, d, features, width),
            values_t: PairPanels::from_strided_columns(&values[head * d..], n, d, features, width),
        }
    }
}

/// bf16 products with f32 accumulation, everything transposed: the scores are `Sᵀ = K Qᵀ`,
/// `[key_count, rows]`, so that the softmax runs down columns with whole rows of queries per
/// vector and `Pᵀ` packs as the right operand of `Vᵀ Pᵀ` from contiguous pairs of key rows
/// (packing `P` row-major took as long as the product); the accumulator is `[d, rows]`, which
/// also tiles the head's features by 12 (SD's 40 features waste 8 of 48) instead of by 32.
struct Bf16Products<'a> {
    /// This task's queries of the head, NR panels over queries.
    q: PairPanels,
    packed: &'a PackedHead,
    scale: f32,
    col: usize,
    /// The probabilities of the current key block, packed (storage reused across blocks).
    p_t: PairPanels,
}

impl HeadProducts for Bf16Products<'_> {
    /// A whole number of panels of packed keys (12 keys, or 16 for AMX), and even (whole
    /// pairs of values): 120 or 128.
    fn key_block(&self) -> usize {
        let width = self.packed.keys.width();
        KEY_BLOCK / width * width
    }

    fn softmax_step(
        &self,
        tile: ScoreTile,
        scores: &mut [f32],
        running_max: &mut [f32],
        running_sum: &mut [f32],
        rescale: &mut [f32],
    ) {
        let scale = self.scale;
        vectorized(
            #[inline(always)]
            || tile.softmax_step_transposed(scores, scale, running_max, running_sum, rescale),
        );
    }

    /// `scores [key_count, rows] = K Qᵀ`; the scale is applied in the softmax step.
    fn scores(&mut self, first_key: usize, key_count: usize, scores: &mut [f32]) {
        let rows = self.q.rows();
        let keys = self.packed.keys.view().rows(first_key, key_count);
        let c = ArrayViewMut2::from_shape((key_count, rows), &mut scores[..])
            .expect("scores hold key_count × rows");
        bf16::product_set(keys, self.q.view(), c);
    }

    /// `acc [d, rows] += Vᵀ Pᵀ` from the transposed probabilities `[key_count, rows]`.
    fn accumulate(
        &mut self,
        first_key: usize,
        key_count: usize,
        probabilities: &[f32],
        factors: &[f32],
        acc: &mut [f32],
    ) {
        self.rescale_if_needed(acc, factors);
        let rows = self.q.rows();
        self.p_t
            .repack_strided_columns(probabilities, key_count, rows, rows);
        let values_t = self
            .packed
            .values_t
            .view()
            .pair_range(first_key / 2, key_count.div_ceil(2));
        let d = self.packed.values_t.rows();
        let c = ArrayViewMut2::from_shape((d, rows), acc).expect("acc holds d × rows");
        bf16::product(values_t, self.p_t.view(), c);
    }

    #[inline(always)]
    fn rescale(&self, acc: &mut [f32], factors: &[f32]) {
        for acc_row in acc.chunks_exact_mut(factors.len()) {
            acc_row.iter_mut().zip(factors).for_each(|(a, &f)| *a *= f);
        }
    }

    fn finish(&self, acc: &[f32], sums: &[f32], out: &mut [f32]) {
        let rows = sums.len();
        let features = out.len() / rows.max(1);
        let inv: Vec<f32> = sums.iter().map(|l| 1.0 / l).collect();
        for (dd, acc_row) in acc.chunks_exact(rows).enumerate() {
            for (r, (&a, &inv)) in acc_row.iter().zip(&inv).enumerate() {
                out[r * features + self.col + dd] = a * inv;
            }
        }
    }
}

/// Where a score tile sits, for the online-softmax update of its rows.
#[derive(Debug, Clone, Copy)]
struct ScoreTile {
    first_query: usize,
    first_key: usize,
    causal: bool,
}

impl ScoreTile {
    /// One online-softmax step over a tile of scores (`rows × keys`, keys = `scores.len() /
    /// rows`): mask, update each row's running max and sum, turn the scores into
    /// `exp(score − max)` in place, and set the factor by which each row's output accumulated
    /// under an older max must be rescaled.
    /// `exp_row(row, shift)` replaces each `v` of a row with `exp(v − shift)` and returns
    /// their sum ([`exp_shifted_in_place`] or a faster kernel of the same contract).
    #[inline(always)]
    fn softmax_step(
        self,
        scores: &mut [f32],
        running_max: &mut [f32],
        running_sum: &mut [f32],
        rescale: &mut [f32],
        exp_row: impl Fn(&mut [f32], f32) -> f32,
    ) {
        let rows = running_max.len();
        let key_count = scores.len() / rows;
        let score_rows = scores.chunks_exact_mut(key_count);
        let stats = running_max.iter_mut().zip(running_sum.iter_mut());
        for (r, ((s, factor), (m, l))) in score_rows.zip(rescale.iter_mut()).zip(stats).enumerate()
        {
            *factor = 1.0;
            if self.causal {
                let visible = (self.first_query + r + 1).saturating_sub(self.first_key);
                if visible < key_count {
                    s[visible..].fill(f32::NEG_INFINITY);
                }
            }
            let new_max = m.max(row_max(s));
            if new_max == f32::NEG_INFINITY {
                // Every key so far is masked: contributes nothing yet.
                s.fill(0.0);
                continue;
            }
            *factor = exp(*m - new_max);
            let block_sum = exp_row(s, new_max);
            *l = *l * *factor + block_sum;
            *m = new_max;
        }
    }
}

impl ScoreTile {
    /// [`softmax_step`](Self::softmax_step) on transposed, unscaled scores
    /// (`scores [keys, rows]`, one row per key, one column per query): the same online update
    /// per query, computed down the columns so that every loop runs along a row of queries.
    #[inline(always)]
    fn softmax_step_transposed(
        self,
        scores: &mut [f32],
        scale: f32,
        running_max: &mut [f32],
        running_sum: &mut [f32],
        rescale: &mut [f32],
    ) {
        let rows = running_max.len();
        // 1. Scale, mask (query first_query + r sees keys up to itself) and take each query's
        //    new maximum, kept in `rescale` for now.
        rescale.copy_from_slice(running_max);
        for (t, key_row) in scores.chunks_exact_mut(rows).enumerate() {
            let hidden = if self.causal {
                (self.first_key + t)
                    .saturating_sub(self.first_query)
                    .min(rows)
            } else {
                0
            };
            key_row[..hidden].fill(f32::NEG_INFINITY);
            for (s, m) in key_row[hidden..].iter_mut().zip(&mut rescale[hidden..]) {
                *s *= scale;
                *m = if *s > *m { *s } else { *m };
            }
        }
        // 2. The factor exp(old max − new max) for the sums and outputs so far (1 while a query
        //    has seen no key: its sum and output are still 0).
        for ((m, l), f) in running_max
            .iter_mut()
            .zip(running_sum.iter_mut())
            .zip(rescale.iter_mut())
        {
            let new_max = *f;
            *f = if *m == f32::NEG_INFINITY {
                1.0
            } else {
                exp(*m - new_max)
            };
            *l *= *f;
            *m = new_max;
        }
        // 3. exp(score − max) in place, summed per query.
        for key_row in scores.chunks_exact_mut(rows) {
            for ((s, &m), l) in key_row
                .iter_mut()
                .zip(running_max.iter())
                .zip(running_sum.iter_mut())
            {
                let p = if m == f32::NEG_INFINITY {
                    0.0
                } else {
                    exp(*s - m)
                };
                *s = p;
                *l += p;
            }
        }
    }
}

/// A `rows × cols` matrix at the start of `data`, element `(i, j)` at `i·row_stride + j·col_stride`.
#[derive(Debug, Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Strided<'a> {
    /// The matrix as an ndarray view (it must be in bounds).
    fn view(self) -> ndarray::ArrayView2<'a, f32> {
        let len = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1;
        ndarray::ArrayView2::from_shape(
            (self.rows, self.cols).strides((self.row_stride, self.col_stride)),
            &self.data[..len],
        )
        .expect("in bounds (asserted by the caller)")
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `c = alpha · a · b + beta · c`, `c` row-major `a.rows × b.cols` with row stride `ldc`, on the
/// calling thread (each attention task owns a core).
fn gemm(alpha: f32, a: Strided<'_>, b: Strided<'_>, beta: f32, c: &mut [f32], ldc: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // Internal invariants (the callers build these views from checked shapes); a failure here
    // is a bug in this file, never bad user input.
    assert!(k > 0 && b.rows == k && a.in_bounds() && b.in_bounds());
    assert!(m == 0 || n == 0 || (m - 1) * ldc + n <= c.len());
    if m == 0 || n == 0 {
        return;
    }
    let c_len = (m - 1) * ldc + n;
    let c = ndarray::ArrayViewMut2::from_shape((m, n).strides((ldc, 1)), &mut c[..c_len])
        .expect("in bounds (asserted)");
    sgemm(alpha, a.view(), b.view(), beta, c, Parallelism::Serial).expect("shapes fit (asserted)");
}
