//! Scaled dot-product attention, heads interleaved in the features.
//!
//! f16 with head dims up to [`FLASH_MAX_HEAD_DIM`] runs the tensor-core flash kernel
//! (kernels/attention.cu), which never stores a score. Everything else (f32 mode, and the VAE's
//! single 512-wide head) runs on cuBLAS one block of queries at a time: scores for the block in
//! f32 (`scale · Q Kᵀ`, heads as the GEMM batch), a row softmax that applies the causal mask,
//! then `P V` written straight into the heads' columns of the output. Blocks are sized so the
//! scores never exceed [`SCORE_BUDGET_BYTES`].

use cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
use sd_core::shapes::AttentionShape;
use sd_core::{DType, Result, TensorInfo};

use super::gemm::{self, Layout, Pointers, RowMajorProduct};
use crate::backend::{CudaBackend, driver_error};
use crate::kernels::KernelFile;
use crate::launch;
use crate::tensor::{CudaTensor, PushTensor};

/// The flash kernel's queries per block and threads per block (BLOCK_Q, WARPS·32).
const FLASH_BLOCK_Q: usize = 64;
const FLASH_THREADS: u32 = 128;
/// Largest head dim with a flash kernel instance (registers hold 16 × D accumulators).
pub(crate) const FLASH_MAX_HEAD_DIM: usize = 160;

/// Scores plus probabilities of one query block of the cuBLAS path.
const SCORE_BUDGET_BYTES: usize = 256 << 20;

/// Which implementation runs a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// The tensor-core kernel instance for this padded head dim.
    Flash { padded_head_dim: usize },
    /// cuBLAS, this many queries per block.
    Blocked { queries_per_block: usize },
}

pub(crate) fn choose_path(s: &AttentionShape, dtype: DType) -> Path {
    if dtype == DType::F16 && s.head_dim <= FLASH_MAX_HEAD_DIM {
        return Path::Flash {
            padded_head_dim: s.head_dim.div_ceil(16).max(1) * 16,
        };
    }
    let bytes_per_query = s.heads * s.keys * (4 + dtype.size_in_bytes());
    Path::Blocked {
        queries_per_block: (SCORE_BUDGET_BYTES / bytes_per_query.max(1)).clamp(1, s.queries.max(1)),
    }
}

pub(crate) fn attention(
    b: &CudaBackend,
    q: &CudaTensor,
    k: &CudaTensor,
    v: &CudaTensor,
    heads: usize,
    scale: f32,
    causal: bool,
) -> Result<CudaTensor> {
    b.expect_dtype("attention", &[q, k, v])?;
    let shape = AttentionShape::check(q.shape(), k.shape(), v.shape(), heads)?;
    let out = b.uninit("attention", q.shape())?;
    if out.numel() == 0 {
        return Ok(out);
    }
    match choose_path(&shape, b.dtype()) {
        Path::Flash { padded_head_dim } => {
            flash(b, q, k, v, &out, &shape, padded_head_dim, scale, causal)?
        }
        Path::Blocked { queries_per_block } => {
            blocked(b, q, k, v, &out, &shape, queries_per_block, scale, causal)?
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn flash(
    b: &CudaBackend,
    q: &CudaTensor,
    k: &CudaTensor,
    v: &CudaTensor,
    out: &CudaTensor,
    s: &AttentionShape,
    padded_head_dim: usize,
    scale: f32,
    causal: bool,
) -> Result<()> {
    let u32_of = |what, value| launch::to_u32("attention", what, value);
    let cfg = LaunchConfig {
        grid_dim: (
            launch::grid_x("attention", s.queries.div_ceil(FLASH_BLOCK_Q))?,
            launch::grid_yz("attention", s.heads)?,
            launch::grid_yz("attention", s.batch)?,
        ),
        block_dim: (FLASH_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (queries, keys) = (u32_of("queries", s.queries)?, u32_of("keys", s.keys)?);
    let (heads, head_dim) = (u32_of("heads", s.heads)?, u32_of("head dim", s.head_dim)?);
    u32_of("features", s.features())?;
    let causal = i32::from(causal);
    let f = b.kernel(
        KernelFile::Attention,
        &format!("flash_attention_d{padded_head_dim}"),
    )?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(q)
        .tensor(k)
        .tensor(v)
        .tensor(out)
        .arg(&queries)
        .arg(&keys)
        .arg(&heads)
        .arg(&head_dim)
        .arg(&scale)
        .arg(&causal);
    // SAFETY: q and out are [batch, queries, heads·d], k and v [batch, keys, heads·d], as the
    // kernel indexes them; the instance's D covers head_dim.
    unsafe { args.launch(cfg) }.map_err(driver_error("flash attention"))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn blocked(
    b: &CudaBackend,
    q: &CudaTensor,
    k: &CudaTensor,
    v: &CudaTensor,
    out: &CudaTensor,
    s: &AttentionShape,
    queries_per_block: usize,
    scale: f32,
    causal: bool,
) -> Result<()> {
    let (d, features) = (s.head_dim, s.features());
    let stream = b.stream();
    let dtype = b.dtype();
    // SAFETY: each block's GEMM writes every score it later reads.
    let scores = unsafe { stream.alloc::<f32>(s.heads * queries_per_block * s.keys) }
        .map_err(driver_error("allocate attention scores"))?;
    let probs = b.uninit("attention", &[s.heads, queries_per_block, s.keys])?;
    let softmax = b.typed_kernel(KernelFile::Norm, "attention_softmax")?;
    let (scores_ptr, _record) = scores.device_ptr(stream);
    let ptrs = |x: &CudaTensor| (x.device_ptr(stream), dtype);
    let keys_arg = launch::to_u32("attention", "keys", s.keys)?;
    let causal_arg = i32::from(causal);

    for batch in 0..s.batch {
        let q_base = batch * s.queries * features;
        let kv_base = batch * s.keys * features;
        for first_query in (0..s.queries).step_by(queries_per_block) {
            let rows = queries_per_block.min(s.queries - first_query);
            // Per head h (the GEMM batch, heads d apart in the features):
            // scores[h] = scale · q[rows, h] · k[:, h]ᵀ.
            let scores_product = RowMajorProduct {
                m: rows,
                n: s.keys,
                k: d,
                batch: s.heads,
                a: Layout {
                    offset: q_base + first_query * features,
                    ld: features,
                    batch_stride: d,
                    transposed: false,
                },
                b: Layout {
                    offset: kv_base,
                    ld: features,
                    batch_stride: d,
                    transposed: true,
                },
                c: Layout::rows(s.keys, rows * s.keys),
                alpha: scale,
                beta: 0.0,
            };
            let score_ptrs = Pointers {
                a: ptrs(q),
                b: ptrs(k),
                c: (scores_ptr, DType::F32),
            };
            // SAFETY: the layouts stay inside q, k and the scores buffer (rows ≤ its block).
            unsafe { gemm::run(b, &scores_product, score_ptrs) }?;

            let (rows_arg, first_arg) = (
                launch::to_u32("attention", "query block", rows)?,
                launch::to_u32("attention", "first query", first_query)?,
            );
            let mut args = stream.launch_builder(&softmax);
            args.arg(&scores)
                .tensor(&probs)
                .arg(&keys_arg)
                .arg(&rows_arg)
                .arg(&first_arg)
                .arg(&causal_arg);
            // SAFETY: heads·rows rows of `keys` scores in, the same count of probabilities out.
            unsafe { args.launch(launch::per_row("attention", s.heads * rows)?) }
                .map_err(driver_error("attention softmax"))?;

            // out[rows, h] = probs[h] · v[:, h].
            let value_product = RowMajorProduct {
                m: rows,
                n: d,
                k: s.keys,
                batch: s.heads,
                a: Layout::rows(s.keys, rows * s.keys),
                b: Layout {
                    offset: kv_base,
                    ld: features,
                    batch_stride: d,
                    transposed: false,
                },
                c: Layout {
                    offset: q_base + first_query * features,
                    ld: features,
                    batch_stride: d,
                    transposed: false,
                },
                alpha: 1.0,
                beta: 0.0,
            };
            let value_ptrs = Pointers {
                a: ptrs(&probs),
                b: ptrs(v),
                c: ptrs(out),
            };
            // SAFETY: as above, inside probs, v and out.
            unsafe { gemm::run(b, &value_product, value_ptrs) }?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::super::gemm::{ColumnMajorCall, tests::emulate};
    use super::*;

    #[test]
    fn shape_errors_match_the_cpu_backend() {
        let err = AttentionShape::check(&[1, 4, 8], &[1, 5, 8], &[1, 5, 8], 3).unwrap_err();
        assert!(
            err.to_string().contains("do not split into 3 heads"),
            "{err}"
        );
        let err = AttentionShape::check(&[1, 4, 8], &[2, 5, 8], &[2, 5, 8], 2).unwrap_err();
        assert!(err.to_string().contains("batch and feature"), "{err}");
        let err = AttentionShape::check(&[1, 4, 8], &[1, 5, 8], &[1, 6, 8], 2).unwrap_err();
        assert!(err.to_string().contains("v must have k's shape"), "{err}");
        let err = AttentionShape::check(&[1, 4, 8], &[1, 0, 8], &[1, 0, 8], 2).unwrap_err();
        assert!(err.to_string().contains("no keys"), "{err}");
    }

    #[test]
    fn paths_pick_flash_for_f16_heads_up_to_160() {
        let sd = |heads, d| AttentionShape {
            batch: 2,
            queries: 4096,
            keys: 4096,
            heads,
            head_dim: d,
        };
        assert_eq!(
            choose_path(&sd(8, 40), DType::F16),
            Path::Flash {
                padded_head_dim: 48
            }
        );
        assert_eq!(
            choose_path(&sd(8, 160), DType::F16),
            Path::Flash {
                padded_head_dim: 160
            }
        );
        // The VAE's one 512-wide head: 4096 keys · 6 bytes per query → 10922 queries fit.
        assert_eq!(
            choose_path(&sd(1, 512), DType::F16),
            Path::Blocked {
                queries_per_block: 4096
            }
        );
        // f32 mode: 8 heads · 4096 keys · 8 bytes = 256 KiB per query → 1024 queries per block.
        assert_eq!(
            choose_path(&sd(8, 40), DType::F32),
            Path::Blocked {
                queries_per_block: 1024
            }
        );
    }

    /// The blocked path's two products, run through the cuBLAS emulation with a host softmax
    /// in between, give softmax(q kᵀ · scale) v per head.
    #[test]
    fn blocked_products_address_interleaved_heads() {
        let (queries, keys, heads, d) = (3, 4, 2, 2);
        let features = heads * d;
        let q: Vec<f32> = (0..queries * features)
            .map(|i| (i % 5) as f32 * 0.3 - 0.5)
            .collect();
        let k: Vec<f32> = (0..keys * features)
            .map(|i| (i % 7) as f32 * 0.2 - 0.6)
            .collect();
        let v: Vec<f32> = (0..keys * features).map(|i| (i % 3) as f32 - 1.0).collect();
        let scale = 0.7;
        let rows = queries;
        let scores_product = RowMajorProduct {
            m: rows,
            n: keys,
            k: d,
            batch: heads,
            a: Layout {
                offset: 0,
                ld: features,
                batch_stride: d,
                transposed: false,
            },
            b: Layout {
                offset: 0,
                ld: features,
                batch_stride: d,
                transposed: true,
            },
            c: Layout::rows(keys, rows * keys),
            alpha: scale,
            beta: 0.0,
        };
        let mut scores = vec![0.0; heads * rows * keys];
        let call = ColumnMajorCall::new(&scores_product).expect("fits");
        // cuBLAS's A is the row-major B (k) and its B the row-major A (q).
        emulate(&call, &k, &q, &mut scores, scale, 0.0);
        for row in scores.chunks_mut(keys) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|s| *s = (*s - max).exp());
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|s| *s /= sum);
        }
        let value_product = RowMajorProduct {
            m: rows,
            n: d,
            k: keys,
            batch: heads,
            a: Layout::rows(keys, rows * keys),
            b: Layout {
                offset: 0,
                ld: features,
                batch_stride: d,
                transposed: false,
            },
            c: Layout {
                offset: 0,
                ld: features,
                batch_stride: d,
                transposed: false,
            },
            alpha: 1.0,
            beta: 0.0,
        };
        let mut out = vec![0.0; queries * features];
        let call = ColumnMajorCall::new(&value_product).expect("fits");
        emulate(&call, &v, &scores, &mut out, 1.0, 0.0);

        for h in 0..heads {
            for i in 0..queries {
                let logits: Vec<f32> = (0..keys)
                    .map(|j| {
                        scale
                            * (0..d)
                                .map(|c| q[i * features + h * d + c] * k[j * features + h * d + c])
                                .sum::<f32>()
                    })
                    .collect();
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let weights: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f32 = weights.iter().sum();
                for c in 0..d {
                    let want: f32 = (0..keys)
                        .map(|j| weights[j] / sum * v[j * features + h * d + c])
                        .sum();
                    let got = out[i * features + h * d + c];
                    assert!(
                        (got - want).abs() < 1e-5,
                        "head {h} query {i} dim {c}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
