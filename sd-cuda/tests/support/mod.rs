//! Shared by the GPU tests: opening the device once per dtype (or skipping with the reason),
//! and comparing against the CPU backend.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::OnceLock;

use half::f16;
use sd_core::cpu::{CpuBackend, CpuTensor};
use sd_core::{Backend, DType, HostTensor};
use sd_cuda::CudaBackend;

/// f32 storage, f32 arithmetic on both sides: only summation order differs (cuBLAS blocks its
/// sums differently from the CPU engine, the kernels reduce in trees). Relative to the largest
/// reference value.
pub const F32_TOLERANCE: f32 = 1e-5;

/// f16 storage: inputs are rounded to f16 for both backends, so the difference is the GPU's
/// f16 output rounding (2⁻¹¹ ≈ 4.9e-4 relative) plus, in attention, probabilities rounded to
/// f16 before `P·V`. Relative to the largest reference value.
pub const F16_TOLERANCE: f32 = 2e-3;

pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => F16_TOLERANCE,
        _ => F32_TOLERANCE,
    }
}

/// The device backend for `dtype`, opened once per test binary; `None` (after printing why,
/// once) where there is no usable device. With `REQUIRE_CUDA=1` a missing device fails instead.
pub fn gpu(dtype: DType) -> Option<&'static CudaBackend> {
    static F32: OnceLock<Option<CudaBackend>> = OnceLock::new();
    static F16: OnceLock<Option<CudaBackend>> = OnceLock::new();
    let cell = if dtype == DType::F16 { &F16 } else { &F32 };
    cell.get_or_init(|| {
        sd_testkit::gpu_or_skip(CudaBackend::with_dtype(0, dtype), |b| {
            format!("{} ({dtype:?})", b.device_name())
        })
    })
    .as_ref()
}

/// `x` as the backend will hold it: rounded to f16 when that is its storage.
pub fn as_stored(x: &HostTensor, dtype: DType) -> HostTensor {
    match dtype {
        DType::F16 => x.mapv(|v| f16::from_f32(v).to_f32()),
        _ => x.clone(),
    }
}

/// Upload `x` to both backends; the CPU copy gets the values the GPU stores.
pub fn both(gpu: &CudaBackend, x: &HostTensor) -> (CpuTensor, sd_cuda::CudaTensor) {
    let cpu = CpuBackend::new()
        .upload(&as_stored(x, gpu.dtype()))
        .expect("cpu upload");
    let dev = gpu.upload(x).expect("gpu upload");
    (cpu, dev)
}

/// `max |got − want| / max(max |want|, 1e-30)`; shapes must agree.
pub fn relative_error(got: &HostTensor, want: &HostTensor) -> f32 {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    let worst = got
        .iter()
        .zip(want.iter())
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
    worst / scale
}

/// Download and compare with the CPU result.
pub fn assert_matches_cpu(
    gpu: &CudaBackend,
    got: &sd_cuda::CudaTensor,
    want: &CpuTensor,
    what: &str,
) {
    let got = gpu.download(got).expect("download");
    let want = CpuBackend::new().download(want).expect("cpu download");
    let err = relative_error(&got, &want);
    let tol = tolerance(gpu.dtype());
    assert!(
        err <= tol,
        "{what}: relative error {err:.3e} > {tol:.0e} ({:?})",
        gpu.dtype()
    );
}

/// Deterministic pseudo-random values in [-1, 1) from a seed (proptest draws the seed).
pub fn random(shape: &[usize], seed: u64) -> HostTensor {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    HostTensor::from_shape_vec(shape.to_vec(), values).expect("shape")
}
