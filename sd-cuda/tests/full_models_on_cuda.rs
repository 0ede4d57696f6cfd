//! The full-size SD 1.5 UNet and VAE decoder — random weights, the seeded synthetic ones `sd
//! bench` times — on the GPU in f16 storage against the CPU backend in f32. Prints each
//! component's error (tools/gpu_check.sh collects the lines) and bounds it.
//!
//! Without a CUDA device each test prints "skipped" and passes, which says nothing about the
//! GPU; `REQUIRE_CUDA=1` makes it fail instead.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;
use sd_core::{Backend, DType, Denoiser, HostTensor, LatentCodec, TorchGenerator};
use sd_unet::{UNet2DConditionModel, UNetConfig};
use sd_vae::{AutoencoderKL, VaeConfig};
use support::{gpu, relative_error};

/// A whole network in f16 (weights rounded to f16, every activation stored in f16) against f32:
/// the per-op 2e-3 compounds over ~25 (UNet) or ~30 (VAE) layers of depth. A first bound, to be
/// tightened with the numbers the first hardware run prints.
const FULL_MODEL_TOLERANCE: f32 = 3e-2;

fn report(what: &str, got: &HostTensor, want: &HostTensor) {
    let error = relative_error(got, want);
    println!("{what}: max |gpu - cpu| / max |cpu| = {error:.3e} (f16 storage vs f32)");
    assert!(
        error.is_finite() && error < FULL_MODEL_TOLERANCE,
        "{what}: relative error {error:.3e} over {FULL_MODEL_TOLERANCE:.0e}"
    );
}

/// One UNet step at batch 2 (classifier-free guidance at 512×512).
fn unet_step<B: Backend>(
    b: &B,
    store: &WeightStore,
    latents: &HostTensor,
    context: &HostTensor,
) -> HostTensor {
    let unet = UNet2DConditionModel::from_store(b, UNetConfig::sd15(4).unwrap(), store).unwrap();
    let noise = unet
        .predict_noise(
            b,
            &b.upload(latents).unwrap(),
            500.0,
            &b.upload(context).unwrap(),
        )
        .unwrap();
    b.download(&noise).unwrap()
}

/// A 512×512 decode.
fn vae_decode<B: Backend>(b: &B, store: &WeightStore, latents: &HostTensor) -> HostTensor {
    let vae = AutoencoderKL::from_store(b, VaeConfig::sd15().unwrap(), store).unwrap();
    b.download(&vae.decode(b, &b.upload(latents).unwrap()).unwrap())
        .unwrap()
}

#[test]
fn full_size_unet_step_on_cuda_matches_the_cpu_backend() {
    let Some(gpu) = gpu(DType::F16) else {
        return;
    };
    let store = WeightStore::synthetic(0);
    let mut generator = TorchGenerator::new(0);
    let latents = generator.randn(&[2, 4, 64, 64]);
    let context = generator.randn(&[2, 77, 768]);
    let got = unet_step(gpu, &store, &latents, &context);
    let want = unet_step(&CpuBackend::new(), &store, &latents, &context);
    report("full-size UNet step (batch 2, 64×64 latents)", &got, &want);
}

#[test]
fn full_size_vae_decode_on_cuda_matches_the_cpu_backend() {
    let Some(gpu) = gpu(DType::F16) else {
        return;
    };
    let store = WeightStore::synthetic(0);
    let latents = TorchGenerator::new(1).randn(&[1, 4, 64, 64]);
    let got = vae_decode(gpu, &store, &latents);
    let want = vae_decode(&CpuBackend::new(), &store, &latents);
    report("full-size VAE decode (64×64 → 512×512)", &got, &want);
}
