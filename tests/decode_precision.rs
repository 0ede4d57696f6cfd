//! A decode in reduced precision that gives NaN or infinite pixels is redone in f32 and said so
//! once; a decode that is not finite in f32 either is a typed error, never a black image.
//!
//! The VAEs here are tiny-sd's, rewritten as f32 `--vae` files:
//! - **overflows in bf16 only**: in the decoder's mid-block attention, `to_v` (weight and bias)
//!   is scaled by 1e-30 and `to_out.0.weight` by `3.4e38 / max|w|`, so its largest entry is
//!   3.4e38: finite in f32 (largest 3.4028e38) but past the bf16 rounding boundary (3.3961e38,
//!   halfway between bf16's largest finite value 3.3895e38 and 2^128), so bf16 storage rounds it
//!   to infinity. In f32 the attention output is `3.4e38·1e-30/max|w|` ≈ 1e9 times the
//!   original's (the values are ~1e-30 before that projection, ~1e9 after; no product leaves
//!   f32's range, and the next group norm brings them back to unit scale); in bf16 the infinite
//!   weight times a nonzero value gives ±inf, and the group norm after it NaN. Both are 1×1
//!   products (linear layers), so no filter transform sums the huge entries.
//! - **not finite even in f32**: `conv_out.bias` of the decoder is NaN.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::path::{Path, PathBuf};

use sd_core::cpu::{CpuBackend, Precision};
use sd_core::weights::SafetensorsFile;
use sd_core::{Backend, Error, HostTensor, LatentCodec};
use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
use support::cli::{path_arg, scratch, sd, stderr};
use support::fixtures;

/// Above bf16's rounding boundary to infinity, below f32's largest finite value.
const PAST_BF16: f32 = 3.4e38;

/// tiny-sd's VAE with `edit` applied to each tensor (by name), written as f32 safetensors.
fn edited_vae(dir: &Path, name: &str, edit: impl Fn(&str, &mut HostTensor)) -> PathBuf {
    let source =
        SafetensorsFile::open(fixtures().join("tiny-sd/vae/diffusion_pytorch_model.safetensors"))
            .unwrap();
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = source
        .names()
        .map(|key| {
            let mut tensor = source.get(key).unwrap();
            edit(key, &mut tensor);
            let bytes = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
            (key.to_string(), bytes, tensor.shape().to_vec())
        })
        .collect();
    let views = tensors.iter().map(|(name, bytes, shape)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .unwrap();
        (name.clone(), view)
    });
    let path = dir.join(name);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

/// See the module docs: finite in f32, infinite weights in bf16.
fn vae_overflowing_in_bf16(dir: &Path) -> PathBuf {
    const ATTENTION: &str = "decoder.mid_block.attentions.0";
    edited_vae(dir, "bf16-overflow-vae.safetensors", |key, tensor| {
        let Some(part) = key.strip_prefix(ATTENTION) else {
            return;
        };
        match part {
            ".to_v.weight" | ".to_v.bias" => tensor.mapv_inplace(|v| v * 1e-30),
            ".to_out.0.weight" => {
                let largest = tensor.iter().fold(0f32, |m, v| m.max(v.abs()));
                tensor.mapv_inplace(|v| v / largest * PAST_BF16);
                assert!(tensor.iter().all(|v| v.is_finite()));
            }
            _ => {}
        }
    })
}

fn vae_nan_in_f32(dir: &Path) -> PathBuf {
    edited_vae(dir, "nan-vae.safetensors", |key, tensor| {
        if key == "decoder.conv_out.bias" {
            tensor.fill(f32::NAN);
        }
    })
}

fn load(precision: Precision, vae: &Path) -> StableDiffusion<CpuBackend> {
    let options = LoadOptions {
        vae: Some(vae.to_path_buf()),
        ..LoadOptions::default()
    };
    StableDiffusion::load_on(
        CpuBackend::with_precision(precision),
        fixtures().join("tiny-sd"),
        options,
    )
    .unwrap()
}

fn request() -> GenerationRequest {
    GenerationRequest::new("a red fox")
        .steps(2)
        .seed(11)
        .batch_size(2)
}

/// The model's own decode of batch row `row` of `latents` (as the pipeline scales them).
fn decode(model: &StableDiffusion<CpuBackend>, latents: &HostTensor, row: usize) -> HostTensor {
    let codec = model.pipeline().codec();
    let b = model.pipeline().backend();
    let scaled = latents
        .slice(ndarray::s![row..row + 1, .., .., ..])
        .mapv(|v| v / codec.scaling_factor())
        .into_dyn();
    b.download(&codec.decode(b, &b.upload(&scaled).unwrap()).unwrap())
        .unwrap()
}

#[test]
fn a_bf16_decode_that_overflows_is_redone_in_f32_and_reported() {
    let dir = scratch("bf16-overflow");
    let vae = vae_overflowing_in_bf16(&dir);
    let bf16 = load(Precision::Bf16, &vae);
    let f32 = load(Precision::F32, &vae);

    let generation = bf16.generate(&request()).unwrap();
    assert_eq!(generation.decoded_in_f32, vec![0, 1]);
    for row in 0..2 {
        // The premise: the bf16 decode of these latents is not finite, the f32 one is.
        let in_bf16 = decode(&bf16, &generation.latents, row);
        assert!(in_bf16.iter().any(|v| !v.is_finite()));
        let in_f32 = decode(&f32, &generation.latents, row);
        assert!(in_f32.iter().all(|v| v.is_finite()));
        // The image returned is the f32 decode of the bf16 run's latents.
        let expected = stable_diffusion::RgbImage::from_tensor(
            in_f32
                .index_axis(ndarray::Axis(0), 0)
                .into_dimensionality()
                .unwrap(),
        );
        assert_eq!(generation.images[row], expected);
    }

    // The same VAE in f32 needs no retry.
    assert!(f32.generate(&request()).unwrap().decoded_in_f32.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_decode_that_is_not_finite_in_f32_either_is_a_typed_error() {
    let dir = scratch("nan-vae");
    let vae = vae_nan_in_f32(&dir);
    for (precision, stage) in [
        (Precision::F32, "decoded image"),
        (Precision::Bf16, "decoded image (redone in f32)"),
    ] {
        match load(precision, &vae).generate(&request()) {
            Err(Error::NonFinite {
                stage: found,
                step,
                total,
            }) => {
                // Caught after the last step (PNDM's 2 steps are 3 model evaluations).
                assert_eq!((found, step), (stage, total), "{precision:?}");
            }
            other => panic!("{precision:?}: expected NonFinite, got {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sd_generate_warns_once_when_it_redoes_a_decode_in_f32() {
    let dir = scratch("bf16-overflow-cli");
    let vae = vae_overflowing_in_bf16(&dir);
    let out = dir.join("out.png");
    let run = sd(&[
        "generate",
        "--prompt",
        "a red fox",
        "--steps",
        "2",
        "--batch",
        "2",
        "--precision",
        "bf16",
        "--vae",
        path_arg(&vae),
        "-q",
        "--output",
        path_arg(&out),
    ]);
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("f32")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].starts_with("warning:") && warnings[0].contains("images 1, 2"),
        "{err}"
    );
    assert!(dir.join("out-1.png").exists() && dir.join("out-2.png").exists());

    // Not finite in f32 either: one error line naming the decode, no image written.
    let nan = vae_nan_in_f32(&dir);
    let run = sd(&[
        "generate",
        "--prompt",
        "a red fox",
        "--steps",
        "2",
        "--precision",
        "bf16",
        "--vae",
        path_arg(&nan),
        "-q",
        "--output",
        path_arg(&dir.join("nan.png")),
    ]);
    support::cli::assert_fails_naming(&run, &["decoded image (redone in f32) became NaN"]);
    assert!(!dir.join("nan.png").exists());
    let _ = std::fs::remove_dir_all(dir);
}
