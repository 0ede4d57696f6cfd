//! TAESD (`AutoencoderTiny`) against diffusers (goldens by `tools/taesd_goldens.py`).
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use std::time::Instant;

use sd_core::cpu::CpuBackend;
use sd_core::weights::SafetensorsFile;
use sd_core::{Backend, LatentCodec};
use sd_testkit::{Goldens, assert_matches_golden, fixtures, full_size_dir};
use sd_vae::{AutoencoderKL, AutoencoderTiny, TinyConfig, VaeConfig};

fn check_against(
    model: &AutoencoderTiny<CpuBackend>,
    goldens: &dyn Fn(&str) -> sd_core::HostTensor,
    what: &str,
) {
    let b = CpuBackend::new();
    let latents = b.upload(&goldens("decode/latents")).unwrap();
    let image = model.decode(&b, &latents).unwrap();
    assert_matches_golden(&format!("{what} decode"), &image, &goldens("decode/image"));
    let input = b.upload(&goldens("encode/image")).unwrap();
    let encoded = model.encode_latents(&b, &input).unwrap();
    assert_matches_golden(
        &format!("{what} encode"),
        &encoded,
        &goldens("encode/latents"),
    );
}

#[test]
fn tiny_taesd_decodes_and_encodes_as_diffusers() {
    let b = CpuBackend::new();
    let model = AutoencoderTiny::load(&b, fixtures().join("tiny-taesd")).unwrap();
    assert_eq!(
        model.scaling_factor(),
        1.0,
        "TAESD takes latents in the UNet's scale"
    );
    assert_eq!(model.downscale_factor(), 8);
    let goldens = Goldens::open("taesd", "taesd.safetensors");
    check_against(&model, &|key| goldens.host(key), "tiny TAESD");
}

#[test]
fn a_decoder_only_file_decodes_and_refuses_to_encode() {
    // The decoder half of the tiny TAESD, alone in a file (as madebyollin's taesd_decoder).
    let source =
        SafetensorsFile::open(fixtures().join("tiny-taesd/diffusion_pytorch_model.safetensors"))
            .unwrap();
    let dir = std::env::temp_dir().join(format!("sd-taesd-decoder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("tiny-taesd/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let tensors: Vec<(String, Vec<f32>, Vec<usize>)> = source
        .names()
        .filter(|n| n.starts_with("decoder."))
        .map(|n| {
            let t = source.get(n).unwrap();
            (
                n.to_string(),
                t.iter().copied().collect(),
                t.shape().to_vec(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, data, shape)| {
            let bytes: &[u8] = bytemuck_f32(data);
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap(),
            )
        })
        .collect();
    let file = dir.join("decoder.safetensors");
    safetensors::serialize_to_file(views, None, &file).unwrap();

    let b = CpuBackend::new();
    let model = AutoencoderTiny::load(&b, &file).unwrap();
    assert!(!model.has_encoder());
    let goldens = Goldens::open("taesd", "taesd.safetensors");
    let image = model
        .decode(&b, &b.upload(&goldens.host("decode/latents")).unwrap())
        .unwrap();
    assert_matches_golden("decoder-only decode", &image, &goldens.host("decode/image"));
    let err = model
        .encode_latents(&b, &b.upload(&goldens.host("encode/image")).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("no encoder"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

fn bytemuck_f32(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the slice covers exactly
    // the floats' bytes and lives as long as `data`.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

#[test]
fn a_full_vae_file_is_not_taken_for_taesd() {
    // tiny-sd's AutoencoderKL weights have no `decoder.layers.*`: a typed missing-tensor error.
    let b = CpuBackend::new();
    let err = AutoencoderTiny::load(
        &b,
        fixtures().join("tiny-sd/vae/diffusion_pytorch_model.safetensors"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("decoder.layers.0.weight"), "{err}");
}

#[test]
fn unsupported_config_values_are_named() {
    let dir = std::env::temp_dir().join(format!("sd-taesd-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, r#"{"act_fn": "mish"}"#).unwrap();
    let err = TinyConfig::from_file(&path).unwrap_err();
    assert!(
        matches!(err, sd_core::Error::Config { ref field, .. } if field == "act_fn"),
        "{err}"
    );
    std::fs::write(&path, r#"{"num_decoder_blocks": [1, 1]}"#).unwrap();
    let err = TinyConfig::from_file(&path).unwrap_err();
    assert!(
        matches!(err, sd_core::Error::Config { ref field, .. } if field == "decoder_block_out_channels"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Full-size TAESD against diffusers, then its 512² decode time against the full VAE's, both
/// measured here in one process (the machine may be shared: compare the ratio).
#[test]
#[ignore = "needs tools/taesd_goldens.py full"]
fn full_size_taesd_matches_diffusers_and_decodes_faster_than_the_vae() {
    let dir = full_size_dir().join("taesd");
    let b = CpuBackend::new();
    let model = AutoencoderTiny::load(&b, &dir).unwrap();
    let goldens = SafetensorsFile::open(dir.join("goldens.safetensors")).unwrap();
    check_against(&model, &|key| goldens.get(key).unwrap(), "full-size TAESD");

    let latents = b.upload(&goldens.get("decode/latents").unwrap()).unwrap();
    let start = Instant::now();
    model.decode(&b, &latents).unwrap();
    let taesd = start.elapsed().as_secs_f64();
    println!("TAESD decode 512x512: {taesd:.2} s");
    // The full VAE's time does not depend on its weights' values: seeded random ones do.
    let store = sd_core::weights::WeightStore::synthetic(0);
    let vae = AutoencoderKL::from_store(&b, VaeConfig::sd15().unwrap(), &store).unwrap();
    let start = Instant::now();
    vae.decode(&b, &latents).unwrap();
    let full = start.elapsed().as_secs_f64();
    println!(
        "AutoencoderKL decode 512x512: {full:.2} s; TAESD is {:.1}x faster",
        full / taesd
    );
}
