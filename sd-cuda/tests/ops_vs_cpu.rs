//! Every CUDA op against the CPU backend on random shapes, in f32 storage (tolerance 1e-5
//! relative) and f16 storage (2e-3), see `support` for the metric.
//!
//! Without a CUDA device each case returns at once after one printed "skipped" line: these
//! tests then verify nothing about the GPU.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use proptest::prelude::*;
use sd_core::cpu::CpuBackend;
use sd_core::{Backend, BinaryOp, Conv2dParams, DType, HostTensor, UnaryOp};

const DTYPES: [DType; 2] = [DType::F32, DType::F16];
const CASES: u32 = 24;

fn cpu() -> CpuBackend {
    CpuBackend::new()
}

/// Shapes of 1..=`rank` dims, each 1..=`size`.
fn shapes(rank: usize, size: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=size, 1..=rank)
}

fn scaled(x: HostTensor, by: f32) -> HostTensor {
    x.mapv(|v| v * by)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn unary_matches_cpu(
        shape in shapes(4, 9),
        seed in any::<u64>(),
        op in prop_oneof![
            Just(UnaryOp::Silu),
            Just(UnaryOp::Gelu),
            Just(UnaryOp::QuickGelu),
            Just(UnaryOp::Relu),
            Just(UnaryOp::Tanh),
        ],
    ) {
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &scaled(support::random(&shape, seed), 6.0));
            let want = cpu().unary(&xc, op).unwrap();
            let got = gpu.unary(&xg, op).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("{op:?} {shape:?}"));
        }
    }

    #[test]
    fn affine_matches_cpu(shape in shapes(4, 9), seed in any::<u64>(), mul in -3.0f32..3.0, add in -2.0f32..2.0) {
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&shape, seed));
            let want = cpu().affine(&xc, mul, add).unwrap();
            let got = gpu.affine(&xg, mul, add).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, "affine");
        }
    }

    #[test]
    fn geglu_matches_cpu(outer in shapes(2, 12), half in 1usize..40, seed in any::<u64>()) {
        let mut shape = outer.clone();
        shape.push(2 * half);
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &scaled(support::random(&shape, seed), 4.0));
            let want = cpu().geglu(&xc).unwrap();
            let got = gpu.geglu(&xg).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("geglu {shape:?}"));
        }
    }

    #[test]
    fn binary_broadcasts_like_cpu(
        out in prop::collection::vec(1usize..6, 1..=4),
        a_mask in prop::collection::vec(any::<bool>(), 4),
        b_mask in prop::collection::vec(any::<bool>(), 4),
        b_drop in 0usize..3,
        seed in any::<u64>(),
        op in prop_oneof![Just(BinaryOp::Add), Just(BinaryOp::Sub), Just(BinaryOp::Mul), Just(BinaryOp::Div)],
    ) {
        // Each operand: the output shape with some dims set to 1; b may also lose leading dims.
        let a_shape: Vec<usize> = out.iter().zip(&a_mask).map(|(&d, &one)| if one { 1 } else { d }).collect();
        let b_full: Vec<usize> = out.iter().zip(&b_mask).map(|(&d, &one)| if one { 1 } else { d }).collect();
        let b_shape = b_full[b_drop.min(b_full.len() - 1)..].to_vec();
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (ac, ag) = support::both(gpu, &support::random(&a_shape, seed));
            // Divisors kept away from 0 so the quotients stay finite in f16.
            let b = support::random(&b_shape, seed ^ 1).mapv(|v| v + 1.5);
            let (bc, bg) = support::both(gpu, &b);
            let want = cpu().binary(&ac, &bc, op).unwrap();
            let got = gpu.binary(&ag, &bg, op).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("{op:?} {a_shape:?} {b_shape:?}"));
        }
    }

    #[test]
    fn permute_matches_cpu(
        (shape, axes) in shapes(5, 7).prop_flat_map(|s| {
            let n = s.len();
            (Just(s), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        }),
        seed in any::<u64>(),
    ) {
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&shape, seed));
            let want = cpu().permute(&xc, &axes).unwrap();
            let got = gpu.permute(&xg, &axes).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("permute {shape:?} {axes:?}"));
        }
    }

    #[test]
    fn large_batched_transposes_match_cpu(batch in 1usize..3, rows in 1usize..100, cols in 1usize..100, seed in any::<u64>()) {
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&[batch, rows, cols], seed));
            let want = cpu().permute(&xc, &[0, 2, 1]).unwrap();
            let got = gpu.permute(&xg, &[0, 2, 1]).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, "transpose");
        }
    }

    #[test]
    fn narrow_matches_cpu(
        (shape, axis, start, len) in shapes(4, 7).prop_flat_map(|s| {
            let n = s.len();
            (Just(s), 0..n)
        }).prop_flat_map(|(s, axis)| {
            let dim = s[axis];
            (Just(s), Just(axis), 0..=dim)
        }).prop_flat_map(|(s, axis, start)| {
            let rest = s[axis] - start;
            (Just(s), Just(axis), Just(start), 0..=rest)
        }),
        seed in any::<u64>(),
    ) {
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&shape, seed));
            let want = cpu().narrow(&xc, axis, start, len).unwrap();
            let got = gpu.narrow(&xg, axis, start, len).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, "narrow");
        }
    }

    #[test]
    fn concat_matches_cpu(
        base in shapes(4, 5),
        axis_pick in 0usize..4,
        sizes in prop::collection::vec(0usize..5, 1..4),
        seed in any::<u64>(),
    ) {
        let axis = axis_pick % base.len();
        let inputs: Vec<HostTensor> = sizes.iter().enumerate().map(|(i, &size)| {
            let mut s = base.clone();
            s[axis] = size;
            support::random(&s, seed ^ i as u64)
        }).collect();
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let pairs: Vec<_> = inputs.iter().map(|x| support::both(gpu, x)).collect();
            let cs: Vec<_> = pairs.iter().map(|p| &p.0).collect();
            let gs: Vec<_> = pairs.iter().map(|p| &p.1).collect();
            let want = cpu().concat(&cs, axis).unwrap();
            let got = gpu.concat(&gs, axis).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("concat axis {axis} {sizes:?}"));
        }
    }

    #[test]
    fn upsample_matches_cpu(n in 1usize..3, c in 1usize..5, h in 1usize..10, w in 1usize..10, seed in any::<u64>()) {
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&[n, c, h, w], seed));
            let want = cpu().upsample_nearest2x(&xc).unwrap();
            let got = gpu.upsample_nearest2x(&xg).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, "upsample");
        }
    }

    #[test]
    fn embedding_matches_cpu(
        (vocab, ids) in (1usize..50).prop_flat_map(|v| (Just(v), prop::collection::vec(0..v as u32, 0..30))),
        dim in 1usize..40,
        seed in any::<u64>(),
    ) {
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (tc, tg) = support::both(gpu, &support::random(&[vocab, dim], seed));
            let shape = [1, ids.len()];
            let want = cpu().embedding(&tc, &ids, &shape).unwrap();
            let got = gpu.embedding(&tg, &ids, &shape).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, "embedding");
            // An id past the table is an error on both.
            prop_assert!(gpu.embedding(&tg, &[vocab as u32], &[1]).is_err());
        }
    }

    #[test]
    fn group_norm_matches_cpu(
        n in 1usize..3,
        groups in 1usize..5,
        per_group in 1usize..4,
        spatial in shapes(2, 12),
        silu in any::<bool>(),
        offset in -4.0f32..4.0,
        seed in any::<u64>(),
    ) {
        let c = groups * per_group;
        let mut shape = vec![n, c];
        shape.extend(&spatial);
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&shape, seed).mapv(|v| 2.0 * v + offset));
            let (gc, gg) = support::both(gpu, &support::random(&[c], seed ^ 1).mapv(|v| v + 1.0));
            let (bc, bg) = support::both(gpu, &support::random(&[c], seed ^ 2));
            let want = cpu().group_norm(&xc, groups, &gc, &bc, 1e-5, silu).unwrap();
            let got = gpu.group_norm(&xg, groups, &gg, &bg, 1e-5, silu).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("group_norm {shape:?} silu {silu}"));
        }
    }

    #[test]
    fn group_norm_of_large_groups_matches_cpu(c in 1usize..3, hw in 60usize..140, seed in any::<u64>()) {
        // Groups of more than one chunk (4096 values), so the partial sums are combined.
        let shape = [1, 2 * c, hw, hw];
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&shape, seed));
            let (gc, gg) = support::both(gpu, &support::random(&[2 * c], seed ^ 1));
            let (bc, bg) = support::both(gpu, &support::random(&[2 * c], seed ^ 2));
            let want = cpu().group_norm(&xc, 2, &gc, &bc, 1e-6, true).unwrap();
            let got = gpu.group_norm(&xg, 2, &gg, &bg, 1e-6, true).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, "large group_norm");
        }
    }

    #[test]
    fn layer_norm_matches_cpu(rows in shapes(2, 9), width in 1usize..300, offset in -4.0f32..4.0, seed in any::<u64>()) {
        let mut shape = rows.clone();
        shape.push(width);
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&shape, seed).mapv(|v| v + offset));
            let (gc, gg) = support::both(gpu, &support::random(&[width], seed ^ 1));
            let (bc, bg) = support::both(gpu, &support::random(&[width], seed ^ 2));
            let want = cpu().layer_norm(&xc, &gc, &bc, 1e-5).unwrap();
            let got = gpu.layer_norm(&xg, &gg, &bg, 1e-5).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("layer_norm {shape:?}"));
        }
    }

    #[test]
    fn softmax_matches_cpu(rows in shapes(2, 9), width in 1usize..600, seed in any::<u64>()) {
        let mut shape = rows.clone();
        shape.push(width);
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &scaled(support::random(&shape, seed), 8.0));
            let want = cpu().softmax(&xc).unwrap();
            let got = gpu.softmax(&xg).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("softmax {shape:?}"));
        }
    }

    #[test]
    fn matmul_matches_cpu(
        batch in shapes(2, 3),
        m in 1usize..40,
        k in 1usize..70,
        n in 1usize..40,
        shared_b in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut a_shape = batch.clone();
        a_shape.extend([m, k]);
        let b_shape = if shared_b {
            vec![k, n]
        } else {
            let mut s = batch.clone();
            s.extend([k, n]);
            s
        };
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (ac, ag) = support::both(gpu, &support::random(&a_shape, seed));
            let (bc, bg) = support::both(gpu, &support::random(&b_shape, seed ^ 1));
            let want = cpu().matmul(&ac, &bc).unwrap();
            let got = gpu.matmul(&ag, &bg).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("matmul {a_shape:?} {b_shape:?}"));
        }
    }

    #[test]
    fn linear_matches_cpu(
        rows in shapes(3, 6),
        inp in 1usize..80,
        out in 1usize..50,
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut x_shape = rows.clone();
        x_shape.push(inp);
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&x_shape, seed));
            let (wc, wg) = support::both(gpu, &support::random(&[out, inp], seed ^ 1));
            let (bc, bg) = support::both(gpu, &support::random(&[out], seed ^ 2));
            let want = cpu().linear(&xc, &wc, with_bias.then_some(&bc)).unwrap();
            let got = gpu.linear(&xg, &wg, with_bias.then_some(&bg)).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("linear {x_shape:?} → {out}"));
        }
    }

    #[test]
    fn conv2d_matches_cpu(
        n in 1usize..3,
        c in 1usize..7,
        h in 1usize..13,
        w in 1usize..13,
        o in 1usize..7,
        kernel in prop_oneof![Just(1usize), Just(3)],
        stride in 1usize..3,
        padding in 0usize..2,
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * padding >= kernel && w + 2 * padding >= kernel);
        let params = Conv2dParams { stride, padding };
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (xc, xg) = support::both(gpu, &support::random(&[n, c, h, w], seed));
            let (wc, wg) = support::both(gpu, &support::random(&[o, c, kernel, kernel], seed ^ 1));
            let (bc, bg) = support::both(gpu, &support::random(&[o], seed ^ 2));
            let want = cpu().conv2d(&xc, &wc, with_bias.then_some(&bc), params).unwrap();
            let got = gpu.conv2d(&xg, &wg, with_bias.then_some(&bg), params).unwrap();
            support::assert_matches_cpu(gpu, &got, &want, &format!("conv2d {:?} {kernel}×{kernel} {params:?}", [n, c, h, w]));
        }
    }

    #[test]
    fn attention_matches_cpu(
        batch in 1usize..3,
        queries in 1usize..140,
        keys in 1usize..140,
        heads in 1usize..4,
        head_dim in prop_oneof![1usize..20, Just(40), Just(64), Just(80), Just(160), 161usize..200],
        causal in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let features = heads * head_dim;
        let scale = 1.0 / (head_dim as f32).sqrt();
        for dtype in DTYPES {
            let Some(gpu) = support::gpu(dtype) else { continue };
            let (qc, qg) = support::both(gpu, &scaled(support::random(&[batch, queries, features], seed), 2.0));
            let (kc, kg) = support::both(gpu, &scaled(support::random(&[batch, keys, features], seed ^ 1), 2.0));
            let (vc, vg) = support::both(gpu, &support::random(&[batch, keys, features], seed ^ 2));
            let want = cpu().attention(&qc, &kc, &vc, heads, scale, causal).unwrap();
            let got = gpu.attention(&qg, &kg, &vg, heads, scale, causal).unwrap();
            support::assert_matches_cpu(
                gpu,
                &got,
                &want,
                &format!("attention b{batch} q{queries} k{keys} h{heads} d{head_dim} causal {causal}"),
            );
        }
    }
}

#[test]
fn reshape_shares_data_and_checks_counts() {
    for dtype in DTYPES {
        let Some(gpu) = support::gpu(dtype) else {
            continue;
        };
        let x = support::random(&[2, 3, 4], 7);
        let (_, xg) = support::both(gpu, &x);
        let y = gpu.reshape(&xg, &[6, 4]).unwrap();
        let back = gpu.download(&y).unwrap();
        let want = support::as_stored(&x, dtype)
            .into_shape_with_order(vec![6, 4])
            .unwrap();
        assert_eq!(back, want);
        assert!(gpu.reshape(&xg, &[5, 5]).is_err());
    }
}

#[test]
fn upload_download_round_trips_in_the_storage_type() {
    for dtype in DTYPES {
        let Some(gpu) = support::gpu(dtype) else {
            continue;
        };
        let x = support::random(&[3, 5, 7], 11);
        let back = gpu.download(&gpu.upload(&x).unwrap()).unwrap();
        assert_eq!(back, support::as_stored(&x, dtype));
        let empty = HostTensor::zeros(vec![2, 0, 3]);
        let back = gpu.download(&gpu.upload(&empty).unwrap()).unwrap();
        assert_eq!(back.shape(), &[2, 0, 3]);
    }
}

#[test]
fn bad_shapes_are_typed_errors_on_the_gpu_too() {
    let Some(gpu) = support::gpu(DType::F32) else {
        return;
    };
    let a = gpu.upload(&support::random(&[2, 3], 1)).unwrap();
    let b = gpu.upload(&support::random(&[4, 5], 2)).unwrap();
    assert!(gpu.matmul(&a, &b).is_err());
    assert!(gpu.add(&a, &b).is_err());
    assert!(gpu.permute(&a, &[0, 0]).is_err());
    assert!(gpu.narrow(&a, 1, 2, 2).is_err());
    assert!(gpu.group_norm(&a, 4, &b, &b, 1e-5, false).is_err());
    assert!(gpu.attention(&a, &a, &a, 1, 1.0, false).is_err());
    // Tensors of the other storage type are refused, not misread.
    if let Some(half) = support::gpu(DType::F16) {
        let h = half.upload(&support::random(&[2, 3], 3)).unwrap();
        assert!(gpu.add(&a, &h).is_err());
    }
}
