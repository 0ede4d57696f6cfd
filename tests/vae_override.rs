//! `--vae FILE` / `LoadOptions::vae`: a standalone VAE replaces the checkpoint's.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sd_core::weights::SafetensorsFile;
use sd_testkit::AUTO_MEANS_F32;
use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
use support::{fixtures, load_tiny};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-vae-override-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The VAE of the LDM twin of tiny-sd as a standalone file in LDM names (`encoder.down.0…`),
/// the form of `vae-ft-mse-840000-ema-pruned.safetensors`, plus the training counters such
/// files carry.
fn standalone_ldm_vae(dir: &Path) -> PathBuf {
    let source = SafetensorsFile::open(fixtures().join("ldm/tiny-sd.safetensors")).unwrap();
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = source
        .names()
        .filter_map(|key| {
            key.strip_prefix("first_stage_model.")
                .map(|bare| (key, bare))
        })
        .map(|(key, bare)| {
            let t = source.get(key).unwrap();
            let bytes = t.iter().flat_map(|v| v.to_le_bytes()).collect();
            (bare.to_string(), bytes, t.shape().to_vec())
        })
        .collect();
    assert!(
        tensors
            .iter()
            .any(|(k, ..)| k.starts_with("encoder.down.0.block.0"))
    );
    tensors.push((
        "model_ema.decay".into(),
        0.9999f32.to_le_bytes().to_vec(),
        vec![],
    ));
    let views = tensors.iter().map(|(name, bytes, shape)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .unwrap();
        (name.clone(), view)
    });
    let path = dir.join("tiny-vae-ldm.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn request() -> GenerationRequest {
    GenerationRequest::new("a red fox").steps(3).seed(5)
}

#[test]
fn an_ldm_named_vae_file_gives_the_image_of_the_same_weights_in_the_checkpoint() {
    let dir = scratch("same");
    let vae = standalone_ldm_vae(&dir);
    let model = fixtures().join("tiny-sd");
    let own = load_tiny(&model, LoadOptions::default())
        .generate(&request())
        .unwrap();
    let options = LoadOptions {
        vae: Some(vae),
        ..LoadOptions::default()
    };
    let swapped = load_tiny(&model, options).generate(&request()).unwrap();
    assert_eq!(own.images, swapped.images);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_vae_of_another_shape_or_model_is_a_typed_error() {
    let model = fixtures().join("tiny-sd");
    let load = |vae: PathBuf| {
        let options = LoadOptions {
            vae: Some(vae),
            ..LoadOptions::default()
        };
        StableDiffusion::load(&model, options)
            .unwrap_err()
            .to_string()
    };
    // tiny-sd-alt's VAE: other channel counts.
    let err = load(fixtures().join("tiny-sd-alt/vae"));
    assert!(err.contains("expected") && err.contains("found"), "{err}");
    // A TAESD file is not an AutoencoderKL: its tensors are missing.
    let err = load(fixtures().join("tiny-taesd/diffusion_pytorch_model.safetensors"));
    assert!(
        err.contains("not found") && err.contains("tiny-taesd"),
        "{err}"
    );
}

#[test]
fn sd_generate_records_the_vae_as_a1111() {
    let dir = scratch("cli");
    let vae = standalone_ldm_vae(&dir);
    let out = dir.join("vae.png");
    let sd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sd"))
            .args(args)
            .env(AUTO_MEANS_F32.0, AUTO_MEANS_F32.1)
            .output()
            .unwrap()
    };
    let run = sd(&[
        "generate",
        "--prompt",
        "x",
        "--steps",
        "2",
        "--vae",
        vae.to_str().unwrap(),
        "-q",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let hash = stable_diffusion::model_hash::short_hash(&[&vae]).unwrap();
    let info = String::from_utf8_lossy(&sd(&["info", out.to_str().unwrap()]).stdout).into_owned();
    assert!(
        info.contains(&format!("VAE hash: {hash}, VAE: tiny-vae-ldm.safetensors")),
        "{info}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
