//! End to end: the tiny fixture CLIP text encoder (fixtures/tiny-sd, random weights) on CUDA
//! gives the CPU backend's conditioning and transformers' hidden states (the golden written by
//! tools/make_fixtures.py). Skips, printing why, without a CUDA device.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use sd_clip::{ClipTextConfig, ClipTextEncoder, ClipTextTransformer};
use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;
use sd_core::{Backend, DType, HostTensor};
use sd_cuda::CudaBackend;

use sd_testkit::fixtures;

/// A whole transformer stacks many ops, each within its op tolerance: the end result is held
/// to 10× the per-op bound (f32: 1e-4, the CPU golden test's bound; f16: 2e-2, weights and
/// every activation rounded to f16 along twelve-odd ops).
fn end_to_end_tolerance(dtype: DType) -> f32 {
    10.0 * support::tolerance(dtype)
}

const PROMPTS: [&str; 3] = [
    "",
    "a photograph of an astronaut riding a horse",
    "a (red:1.3) fox in the snow, ((detailed)) BREAK watercolor",
];

#[test]
fn tiny_clip_encoder_on_cuda_matches_the_cpu_backend() {
    for dtype in [DType::F32, DType::F16] {
        let Some(gpu) = support::gpu(dtype) else {
            continue;
        };
        let cpu = CpuBackend::new();
        let model = fixtures().join("tiny-sd");
        let on_cpu = ClipTextEncoder::load(&cpu, &model).unwrap();
        let on_gpu = ClipTextEncoder::load(gpu, &model).unwrap();
        let want = cpu
            .download(&on_cpu.encode_prompts(&cpu, &PROMPTS).unwrap())
            .unwrap();
        let got = gpu
            .download(&on_gpu.encode_prompts(gpu, &PROMPTS).unwrap())
            .unwrap();
        let err = support::relative_error(&got, &want);
        println!("tiny-sd CLIP encoder, CUDA {dtype:?} vs CPU: relative error {err:.3e}");
        assert!(err <= end_to_end_tolerance(dtype), "{dtype:?}: {err}");
    }
}

/// `last_hidden_state` of transformers' `CLIPTextModel` for the golden's token ids.
#[test]
fn tiny_clip_transformer_on_cuda_matches_transformers() {
    for dtype in [DType::F32, DType::F16] {
        let Some(gpu) = support::gpu(dtype) else {
            continue;
        };
        let dir = fixtures().join("tiny-sd");
        let config = ClipTextConfig::from_file(dir.join("text_encoder/config.json")).unwrap();
        let store = WeightStore::open(&dir).unwrap();
        let model: ClipTextTransformer<CudaBackend> =
            ClipTextTransformer::load(gpu, &store.text_encoder().unwrap(), config).unwrap();
        let golden = std::fs::read(fixtures().join("goldens/tiny-sd/clip.safetensors")).unwrap();
        let golden = safetensors::SafeTensors::deserialize(&golden).unwrap();
        let ids_view = golden.tensor("input_ids").unwrap();
        let ids: Vec<u32> = ids_view
            .data()
            .chunks_exact(8)
            .map(|b| u32::try_from(i64::from_le_bytes(b.try_into().unwrap())).unwrap())
            .collect();
        let batch = ids_view.shape()[0];
        let want_view = golden.tensor("last_hidden_state").unwrap();
        let want = HostTensor::from_shape_vec(
            want_view.shape().to_vec(),
            want_view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        )
        .unwrap();
        let got = gpu
            .download(&model.forward(gpu, &ids, batch, 1).unwrap())
            .unwrap();
        let err = support::relative_error(&got, &want);
        println!(
            "tiny-sd CLIP last_hidden_state, CUDA {dtype:?} vs transformers: relative error {err:.3e}"
        );
        assert!(err <= end_to_end_tolerance(dtype), "{dtype:?}: {err}");
    }
}
