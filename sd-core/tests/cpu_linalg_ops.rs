//! The CPU backend's products (matmul, linear, conv2d) against naive, obviously correct loops on
//! random shapes, and their shape errors.
//!
//! Run with `cargo test --release -p sd-core --test cpu_linalg_ops`.

use proptest::prelude::*;
use sd_core::cpu::{CpuBackend, CpuTensor, Precision};
use sd_core::{Backend, Conv2dParams, Error, HostTensor, TensorInfo, WeightRole};

/// Allowed error of each output element, relative to the sum of the magnitudes of the terms it
/// adds up (`Σ|aᵢ·bᵢ| + |bias|`). The references below sum in f64; an f32 dot product of length
/// k has a worst-case relative error of about k·2⁻²⁴ (≈ 6e-6 for our k ≤ 100) and in practice far
/// less, while a wrong, missing or doubled term moves the sum by roughly 1/k of that magnitude,
/// thousands of times more than this bound.
const REL_TOL: f64 = 1e-4;

// ---- helpers -----------------------------------------------------------------------------------

/// Values in [-1, 1) from a seed (xorshift): cheap to generate and to shrink (proptest shrinks
/// the seed and the shapes, not thousands of floats).
fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> CpuTensor {
    let len = shape.iter().product();
    let host = HostTensor::from_shape_vec(shape, random_values(len, seed)).expect("shape fits");
    CpuBackend::new().upload(&host).expect("upload")
}

/// `t` as the products of `precision` see it: itself in f32; in bf16, its values rounded to
/// the nearest bf16 where `rounded` (weights always; activations only where the CPU multiplies
/// in bf16, see [`activations_rounded`]). A product of two bf16 values is exact in f32, so the
/// bf16 path must then match the f64 reference on the rounded operands as closely as the f32
/// path matches on the originals.
fn as_seen(t: &CpuTensor, rounded: bool) -> CpuTensor {
    let host = CpuBackend::new().download(t).expect("download");
    let host = match rounded {
        false => host,
        true => host.mapv(|v| half::bf16::from_f32(v).to_f32()),
    };
    CpuBackend::new().upload(&host).expect("upload")
}

/// Whether a product at `precision` rounds its activations to bf16: only on bf16 instructions
/// (elsewhere bf16 weights are widened to f32 and the activations stay f32).
fn activations_rounded(precision: Precision) -> bool {
    precision == Precision::Bf16 && CpuBackend::has_bf16_instructions()
}

/// A random weight uploaded for `role` at `precision` (packed bf16 panels in bf16).
fn weight(shape: &[usize], seed: u64, precision: Precision, role: WeightRole) -> CpuTensor {
    let dense = tensor(shape, seed);
    let host = CpuBackend::new().download(&dense).expect("download");
    CpuBackend::with_precision(precision)
        .upload_weight(&host, role)
        .expect("upload_weight")
}

/// An expected element: the exact (f64) value and the magnitude its error is measured against.
#[derive(Debug, Clone, Copy, Default)]
struct Expected {
    value: f64,
    magnitude: f64,
}

impl Expected {
    fn add(&mut self, term: f64) {
        self.value += term;
        self.magnitude += term.abs();
    }
}

fn assert_close(op: &str, got: &CpuTensor, want_shape: &[usize], want: &[Expected]) {
    assert_eq!(got.shape(), want_shape, "{op}: output shape");
    for (i, (&g, w)) in got.data().iter().zip(want).enumerate() {
        let err = (g as f64 - w.value).abs();
        // The max(1e-30) keeps an all-zero element (empty sum) exact.
        assert!(
            err <= REL_TOL * w.magnitude.max(1e-30),
            "{op}: element {i}: got {g}, want {} (magnitude {})",
            w.value,
            w.magnitude
        );
    }
}

fn shape_error_op(result: sd_core::Result<CpuTensor>) -> &'static str {
    match result {
        Err(Error::Shape { op, .. }) => op,
        other => panic!("expected a shape error, got {other:?}"),
    }
}

// ---- naive references --------------------------------------------------------------------------

/// `[batch, m, k] × [batch or 1, k, n]` by the textbook triple loop.
fn naive_matmul(
    a: &[f32],
    b: &[f32],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    b_shared: bool,
) -> Vec<Expected> {
    let mut out = vec![Expected::default(); batch * m * n];
    for bi in 0..batch {
        let b_off = if b_shared { 0 } else { bi * k * n };
        for i in 0..m {
            for j in 0..n {
                let e = &mut out[(bi * m + i) * n + j];
                for p in 0..k {
                    e.add(a[(bi * m + i) * k + p] as f64 * b[b_off + p * n + j] as f64);
                }
            }
        }
    }
    out
}

/// `x [rows, in] · w [out, in]ᵀ + bias`.
fn naive_linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    inp: usize,
    outp: usize,
) -> Vec<Expected> {
    let mut out = vec![Expected::default(); rows * outp];
    for r in 0..rows {
        for o in 0..outp {
            let e = &mut out[r * outp + o];
            if let Some(bias) = bias {
                e.add(bias[o] as f64);
            }
            for i in 0..inp {
                e.add(x[r * inp + i] as f64 * w[o * inp + i] as f64);
            }
        }
    }
    out
}

/// Direct convolution: every output element sums its kernel window, skipping taps that fall in
/// the zero padding.
fn naive_conv2d(
    x: &CpuTensor,
    w: &CpuTensor,
    bias: Option<&CpuTensor>,
    stride: usize,
    padding: usize,
) -> (Vec<usize>, Vec<Expected>) {
    let &[n, c, h, wd] = x.shape() else {
        unreachable!()
    };
    let &[o, _, kh, kw] = w.shape() else {
        unreachable!()
    };
    let ho = (h + 2 * padding - kh) / stride + 1;
    let wo = (wd + 2 * padding - kw) / stride + 1;
    let (xd, wdat) = (x.data(), w.data());
    let mut out = vec![Expected::default(); n * o * ho * wo];
    for ni in 0..n {
        for oc in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let e = &mut out[((ni * o + oc) * ho + oy) * wo + ox];
                    if let Some(bias) = bias {
                        e.add(bias.data()[oc] as f64);
                    }
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - padding as isize;
                                let ix = (ox * stride + kx) as isize - padding as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = xd[((ni * c + ci) * h + iy as usize) * wd + ix as usize];
                                let wv = wdat[((oc * c + ci) * kh + ky) * kw + kx];
                                e.add(xv as f64 * wv as f64);
                            }
                        }
                    }
                }
            }
        }
    }
    (vec![n, o, ho, wo], out)
}

// ---- matmul ------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn matmul_matches_naive_loop(
        batch_dims in prop::collection::vec(1usize..4, 0..3),
        m in 1usize..18,
        k in 1usize..18,
        n in 1usize..18,
        b_shared in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let batch: usize = batch_dims.iter().product();
        let a_shape = [batch_dims.clone(), vec![m, k]].concat();
        let b_shape = if b_shared { vec![k, n] } else { [batch_dims.clone(), vec![k, n]].concat() };
        let a = tensor(&a_shape, seed);
        let b = tensor(&b_shape, seed ^ 1);
        let got = CpuBackend::new().matmul(&a, &b).expect("matmul");
        let b_shared = b_shape.len() == 2;
        let want = naive_matmul(a.data(), b.data(), batch, m, k, n, b_shared);
        assert_close("matmul", &got, &[batch_dims, vec![m, n]].concat(), &want);
    }

    /// Products big enough that the engine threads them and batches it spreads over cores.
    #[test]
    fn matmul_large_products_match_naive_loop(
        batch in 1usize..4,
        m in 60usize..140,
        k in 60usize..140,
        n in 60usize..140,
        b_shared in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let a = tensor(&[batch, m, k], seed);
        let b = if b_shared { tensor(&[k, n], seed ^ 1) } else { tensor(&[batch, k, n], seed ^ 1) };
        let got = CpuBackend::new().matmul(&a, &b).expect("matmul");
        let want = naive_matmul(a.data(), b.data(), batch, m, k, n, b_shared);
        assert_close("matmul", &got, &[batch, m, n], &want);
    }
}

// ---- linear ------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn linear_matches_naive_loop(
        lead_dims in prop::collection::vec(1usize..5, 0..3),
        inp in 1usize..41,
        outp in 1usize..41,
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_linear(&lead_dims, inp, outp, with_bias, seed, Precision::F32);
    }

    /// The bf16 path: packed weights, partial kernel tiles (12 × 32) in both directions,
    /// odd depths, more rows than one block of a thread.
    #[test]
    fn bf16_linear_matches_naive_loop_on_rounded_operands(
        lead_dims in prop::collection::vec(1usize..12, 1..3),
        inp in 1usize..300,
        outp in 1usize..70,
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_linear(&lead_dims, inp, outp, with_bias, seed, Precision::Bf16);
    }
}

fn check_linear(
    lead_dims: &[usize],
    inp: usize,
    outp: usize,
    with_bias: bool,
    seed: u64,
    precision: Precision,
) {
    let rows: usize = lead_dims.iter().product();
    let x = tensor(&[lead_dims.to_vec(), vec![inp]].concat(), seed);
    let w = weight(&[outp, inp], seed ^ 1, precision, WeightRole::Linear);
    let bias = with_bias.then(|| tensor(&[outp], seed ^ 2));
    let got = CpuBackend::with_precision(precision)
        .linear(&x, &w, bias.as_ref())
        .expect("linear");
    let (x, w) = (
        as_seen(&x, activations_rounded(precision)),
        as_seen(&w, precision == Precision::Bf16),
    );
    let want = naive_linear(
        x.data(),
        w.data(),
        bias.as_ref().map(|b| b.data()),
        rows,
        inp,
        outp,
    );
    let op = format!("linear {precision:?}");
    assert_close(&op, &got, &[lead_dims.to_vec(), vec![outp]].concat(), &want);
}

// ---- conv2d ------------------------------------------------------------------------------------

/// One conv2d to check: input `[n, c, h, w]`, output channels, kernel `kh × kw`, stride,
/// padding, with or without bias.
#[derive(Debug, Clone, Copy)]
struct ConvCase {
    x: [usize; 4],
    out_channels: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: usize,
    bias: bool,
}

impl ConvCase {
    fn new(
        x: [usize; 4],
        out_channels: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: usize,
    ) -> Self {
        ConvCase {
            x,
            out_channels,
            kernel,
            stride,
            padding,
            bias: true,
        }
    }

    fn fits(&self) -> bool {
        let [_, _, h, w] = self.x;
        h + 2 * self.padding >= self.kernel[0] && w + 2 * self.padding >= self.kernel[1]
    }
}

/// Random conv cases: 1×1 and 3×3 kernel rows, 1- to 3-wide kernel columns (non-square too),
/// stride 1 or 2, padding 0 to 2, odd sizes.
fn conv_cases(
    max_batch: usize,
    channels: std::ops::Range<usize>,
    sides: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = ConvCase> {
    (
        (1..=max_batch, channels, sides.clone(), sides),
        1usize..7,
        prop::sample::select(vec![1usize, 3]),
        prop::sample::select(vec![1usize, 2, 3]),
        1usize..3,
        0usize..3,
        any::<bool>(),
    )
        .prop_map(
            |((n, c, h, w), out_channels, kh, kw, stride, padding, bias)| ConvCase {
                x: [n, c, h, w],
                out_channels,
                kernel: [kh, kw],
                stride,
                padding,
                bias,
            },
        )
        .prop_filter("kernel fits the padded input", ConvCase::fits)
}

fn check_conv(case: ConvCase, seed: u64) {
    check_conv_at(case, seed, Precision::F32);
}

fn check_conv_at(case: ConvCase, seed: u64, precision: Precision) {
    let ConvCase {
        x: x_shape,
        out_channels: o,
        kernel: [kh, kw],
        stride,
        padding,
        bias,
    } = case;
    let x = tensor(&x_shape, seed);
    let w = weight(
        &[o, x_shape[1], kh, kw],
        seed ^ 1,
        precision,
        WeightRole::Conv,
    );
    let bias = bias.then(|| tensor(&[o], seed ^ 2));
    let params = Conv2dParams { stride, padding };
    let got = CpuBackend::with_precision(precision)
        .conv2d(&x, &w, bias.as_ref(), params)
        .expect("conv2d");
    let (x, w) = (
        as_seen(&x, activations_rounded(precision)),
        as_seen(&w, precision == Precision::Bf16),
    );
    let (want_shape, want) = naive_conv2d(&x, &w, bias.as_ref(), stride, padding);
    assert_close(
        &format!("conv2d {precision:?} {case:?}"),
        &got,
        &want_shape,
        &want,
    );
}

proptest! {
    #[test]
    fn conv2d_matches_naive_loop(case in conv_cases(3, 1..6, 1..=12), seed in any::<u64>()) {
        check_conv(case, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// SD-like channel counts (long dot products) with odd sizes, strides and paddings.
    #[test]
    fn conv2d_many_channels_matches_naive_loop(
        case in conv_cases(2, 60..90, 18..=30),
        seed in any::<u64>(),
    ) {
        check_conv(case, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The bf16 path: packed weights (partial 12-channel tiles), packed im2col columns.
    #[test]
    fn bf16_conv2d_matches_naive_loop_on_rounded_operands(
        case in conv_cases(2, 1..40, 1..=20),
        seed in any::<u64>(),
    ) {
        check_conv_at(case, seed, Precision::Bf16);
    }
}

#[test]
fn bf16_conv2d_sd_shapes_match_naive_loop_on_rounded_operands() {
    // Panels that end mid-row, several panels per image (the parallel-task path) and one
    // panel per image (threads over output channels instead).
    check_conv_at(
        ConvCase::new([2, 256, 39, 39], 30, [3, 3], 1, 1),
        21,
        Precision::Bf16,
    );
    check_conv_at(
        ConvCase::new([1, 64, 8, 8], 40, [3, 3], 1, 1),
        22,
        Precision::Bf16,
    );
    check_conv_at(
        ConvCase::new([1, 32, 17, 17], 8, [3, 3], 2, 0),
        23,
        Precision::Bf16,
    );
    check_conv_at(
        ConvCase::new([1, 512, 40, 40], 5, [1, 1], 1, 0),
        24,
        Precision::Bf16,
    );
}

/// Stride-1 3×3 convs large enough for the Winograd path (at least 32 channels each way and
/// 64 output tiles of 4×4, so F(4×4, 3×3)): odd and even sizes, paddings 0–2, at REL_TOL. In
/// bf16 storage on a CPU without bf16 arithmetic the widened weights take it too; with bf16
/// arithmetic these convs stay on the direct product (`VDPBF16PS` from 256 tiles only, AMX
/// never), which rounds the activations.
#[test]
fn conv2d_winograd_sizes_match_naive_loop() {
    for (i, (x, o, padding)) in [
        ([1, 32, 32, 32], 32, 1),
        ([2, 40, 35, 37], 33, 1),
        ([1, 32, 40, 40], 48, 0),
        ([1, 36, 31, 33], 32, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let case = ConvCase::new(x, o, [3, 3], 1, padding);
        check_conv(case, 40 + i as u64);
        check_conv_at(case, 50 + i as u64, Precision::Bf16);
    }
}

#[test]
fn packed_weights_still_work_in_every_op() {
    // A packed bf16 weight given where a dense tensor is expected is unpacked (its bf16 values).
    let bf16 = CpuBackend::with_precision(Precision::Bf16);
    let w = weight(&[3, 5], 31, Precision::Bf16, WeightRole::Linear);
    assert_eq!(w.dtype(), sd_core::DType::BF16);
    let doubled = bf16.add(&w, &w).expect("add");
    let want = as_seen(&tensor(&[3, 5], 31), true);
    let want: Vec<f32> = want.data().iter().map(|v| 2.0 * v).collect();
    assert_eq!(doubled.data(), want.as_slice());
    let host = bf16.download(&w).expect("download");
    assert_eq!(host.shape(), &[3, 5]);
    // In f32, or for a bias, upload_weight keeps the tensor dense.
    let dense = CpuBackend::new()
        .upload_weight(&host, WeightRole::Linear)
        .expect("upload");
    assert_eq!(dense.dtype(), sd_core::DType::F32);
    let bias = bf16
        .upload_weight(&host, WeightRole::Other)
        .expect("upload");
    assert_eq!(bias.dtype(), sd_core::DType::F32);
}

#[test]
fn precision_names_parse_and_unknown_ones_are_typed_errors() {
    assert_eq!("bf16".parse::<Precision>().expect("bf16"), Precision::Bf16);
    assert_eq!(" F32 ".parse::<Precision>().expect("f32"), Precision::F32);
    assert_eq!("auto".parse::<Precision>().expect("auto"), Precision::Auto);
    // Auto resolves to a precision the backend computes in.
    assert_ne!(Precision::Auto.resolve(), Precision::Auto);
    assert_ne!(CpuBackend::default().precision(), Precision::Auto);
    match "fp8".parse::<Precision>() {
        Err(Error::InvalidArgument { name, reason }) => {
            assert_eq!(name, "precision");
            assert!(reason.contains("fp8"), "{reason}");
        }
        other => panic!("expected an invalid-argument error, got {other:?}"),
    }
}

#[test]
fn conv2d_pointwise_over_several_panels_matches_naive_loop() {
    // 1×1 stride 1 unpadded: the no-im2col path. 512 channels × 80×80 positions span several
    // panels (for any panel size up to 8 MiB, see PANEL_BYTES in src/cpu/conv.rs).
    check_conv(ConvCase::new([1, 512, 80, 80], 3, [1, 1], 1, 0), 7);
}

#[test]
fn conv2d_sd_shapes_match_naive_loop() {
    // Downsampling conv (3×3 stride 2, padding 1 in the UNet, 0 in the VAE) and a 3×3 "same"
    // conv at a small SD-like channel count.
    check_conv(ConvCase::new([1, 32, 16, 16], 8, [3, 3], 2, 1), 11);
    check_conv(ConvCase::new([1, 32, 17, 17], 8, [3, 3], 2, 0), 12);
    check_conv(ConvCase::new([2, 64, 9, 9], 16, [3, 3], 1, 1), 13);
}

#[test]
fn conv2d_panel_edges_inside_output_rows_match_naive_loop() {
    // 256 channels × 3×3 taps: panels of at most 910 positions (for any panel size up to
    // 8 MiB), so these 39×39 outputs (stride 1, and stride 2 from 78×78) span several panels,
    // whose edges fall mid-row; batch 2 also runs the panels as parallel tasks.
    let no_bias = ConvCase {
        bias: false,
        ..ConvCase::new([1, 256, 39, 39], 4, [3, 3], 1, 1)
    };
    check_conv(no_bias, 14);
    check_conv(ConvCase::new([2, 256, 78, 78], 3, [3, 3], 2, 1), 15);
}

// ---- shape errors ------------------------------------------------------------------------------

#[test]
fn matmul_rejects_mismatched_shapes() {
    let cpu = CpuBackend::new();
    let cases: [(&[usize], &[usize]); 4] = [
        (&[3], &[3, 2]),          // a has rank 1
        (&[2, 3], &[4, 2]),       // inner dims differ
        (&[2, 2, 3], &[3, 3, 2]), // batch dims differ
        (&[2, 3], &[2, 3, 2]),    // b batched, a not
    ];
    for (sa, sb) in cases {
        let r = cpu.matmul(&tensor(sa, 1), &tensor(sb, 2));
        assert_eq!(shape_error_op(r), "matmul", "{sa:?} × {sb:?}");
    }
}

#[test]
fn linear_rejects_mismatched_shapes() {
    let cpu = CpuBackend::new();
    let x = tensor(&[2, 4], 1);
    assert_eq!(
        shape_error_op(cpu.linear(&x, &tensor(&[3, 5], 2), None)),
        "linear"
    );
    assert_eq!(
        shape_error_op(cpu.linear(&x, &tensor(&[3, 4, 1], 2), None)),
        "linear"
    );
    let bias = tensor(&[4], 3);
    assert_eq!(
        shape_error_op(cpu.linear(&x, &tensor(&[3, 4], 2), Some(&bias))),
        "linear"
    );
    let scalar = tensor(&[], 4);
    assert_eq!(
        shape_error_op(cpu.linear(&scalar, &tensor(&[3, 1], 2), None)),
        "linear"
    );
}

#[test]
fn conv2d_rejects_mismatched_shapes() {
    let cpu = CpuBackend::new();
    let x = tensor(&[1, 3, 5, 5], 1);
    let w = tensor(&[4, 3, 3, 3], 2);
    let same = Conv2dParams::same(1);
    let cases = [
        (tensor(&[3, 5, 5], 1), w.clone(), None, same), // x not 4-D
        (x.clone(), tensor(&[4, 2, 3, 3], 2), None, same), // channel mismatch
        (x.clone(), tensor(&[4, 3, 3], 2), None, same), // w not 4-D
        (x.clone(), w.clone(), Some(tensor(&[3], 3)), same), // bias length
        (
            x.clone(),
            w.clone(),
            None,
            Conv2dParams {
                stride: 0,
                padding: 1,
            },
        ),
        (
            tensor(&[1, 3, 2, 2], 1),
            w.clone(),
            None,
            Conv2dParams::same(0),
        ), // kernel > input
    ];
    for (x, w, bias, params) in cases {
        let r = cpu.conv2d(&x, &w, bias.as_ref(), params);
        assert_eq!(
            shape_error_op(r),
            "conv2d",
            "x {:?} w {:?} {params:?}",
            x.shape(),
            w.shape()
        );
    }
}

#[test]
fn empty_dimensions_give_empty_or_bias_only_outputs() {
    let cpu = CpuBackend::new();
    // k = 0: every output element is an empty sum.
    let got = cpu
        .matmul(&tensor(&[2, 3, 0], 1), &tensor(&[0, 4], 2))
        .expect("matmul k=0");
    assert_eq!(got.shape(), [2, 3, 4]);
    assert!(got.data().iter().all(|&v| v == 0.0));
    let got = cpu
        .matmul(&tensor(&[0, 3, 2], 1), &tensor(&[0, 2, 4], 2))
        .expect("matmul batch 0");
    assert_eq!(got.shape(), [0, 3, 4]);
    // No rows, no output features, no input features (bias only).
    let got = cpu
        .linear(&tensor(&[0, 5], 1), &tensor(&[3, 5], 2), None)
        .expect("linear rows 0");
    assert_eq!(got.shape(), [0, 3]);
    let bias = tensor(&[0], 3);
    let got = cpu
        .linear(&tensor(&[2, 5], 1), &tensor(&[0, 5], 2), Some(&bias))
        .expect("linear out 0");
    assert_eq!(got.shape(), [2, 0]);
    let bias = tensor(&[3], 3);
    let got = cpu
        .linear(&tensor(&[2, 0], 1), &tensor(&[3, 0], 2), Some(&bias))
        .expect("linear in 0");
    assert_eq!(got.data(), [bias.data(), bias.data()].concat());
    // Convolutions with no images, no output channels, no input channels (bias only).
    let w = tensor(&[2, 3, 3, 3], 2);
    let got = cpu
        .conv2d(&tensor(&[0, 3, 5, 5], 1), &w, None, Conv2dParams::same(1))
        .expect("conv n 0");
    assert_eq!(got.shape(), [0, 2, 5, 5]);
    let got = cpu
        .conv2d(
            &tensor(&[1, 3, 5, 5], 1),
            &tensor(&[0, 3, 3, 3], 2),
            None,
            Conv2dParams::same(1),
        )
        .expect("conv o 0");
    assert_eq!(got.shape(), [1, 0, 5, 5]);
    let bias = tensor(&[2], 3);
    let got = cpu
        .conv2d(
            &tensor(&[1, 0, 4, 4], 1),
            &tensor(&[2, 0, 3, 3], 2),
            Some(&bias),
            Conv2dParams::same(1),
        )
        .expect("conv c 0");
    assert_eq!(got.shape(), [1, 2, 4, 4]);
    assert!(got.data()[..16].iter().all(|&v| v == bias.data()[0]));
    assert!(got.data()[16..].iter().all(|&v| v == bias.data()[1]));
}
