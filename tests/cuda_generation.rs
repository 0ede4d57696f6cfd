//! A whole generation on the tiny fixture model through the CUDA backend (f16 storage) against
//! the same request on the CPU backend: the images agree within 2 levels (f16 weights and
//! activations against f32; the tiny model's images are noise-like, so every pixel counts).
//!
//! Without a CUDA device this prints "skipped" and passes, which says nothing about the GPU;
//! `REQUIRE_CUDA=1` (set by tools/gpu_check.sh on the device) makes it fail instead.

#![cfg(any(feature = "cuda", feature = "cuda-13"))]
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use stable_diffusion::cuda::CudaBackend;
use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
use support::{fixtures, max_level_difference};

/// f16 storage on the GPU against f32 on the CPU, through CLIP, ten UNet steps and the VAE.
const CUDA_PIXEL_TOLERANCE: u8 = 2;

#[test]
fn tiny_txt2img_on_cuda_matches_the_cpu_image() {
    let Some(gpu) = sd_testkit::gpu_or_skip(CudaBackend::new(0), |b| b.device_name().to_string())
    else {
        return;
    };
    let model = fixtures().join("tiny-sd");
    let request = GenerationRequest::new("a lighthouse on a cliff at dusk, (oil painting:1.2)")
        .negative_prompt("blurry")
        .scheduler("Euler a")
        .steps(10)
        .seeds(vec![7, 8]);
    let on_gpu = StableDiffusion::load_on(gpu, &model, LoadOptions::default())
        .unwrap()
        .generate(&request)
        .unwrap();
    let on_cpu = support::load_tiny(&model, LoadOptions::default())
        .generate(&request)
        .unwrap();
    assert_eq!(on_gpu.images.len(), 2);
    for (index, (gpu_image, cpu_image)) in on_gpu.images.iter().zip(&on_cpu.images).enumerate() {
        let levels = max_level_difference(gpu_image, cpu_image);
        println!("image {index}: largest difference {levels} level(s)");
        assert!(
            levels <= CUDA_PIXEL_TOLERANCE,
            "image {index}: {levels} levels from the CPU image (tolerance {CUDA_PIXEL_TOLERANCE})"
        );
    }
}
