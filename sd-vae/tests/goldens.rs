//! The VAE against diffusers' outputs (fixtures/goldens/<model>/vae.safetensors, written by
//! tools/make_fixtures.py): decode of fixed latents (square and non-square) and the encoder's
//! mean and log-variance of a fixed image, for both tiny configs loaded from their diffusers
//! folders and for tiny-sd's VAE loaded from its LDM single-file twin.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;
use sd_core::{LatentCodec, TensorInfo};
use sd_testkit::{Goldens, assert_matches_golden, ldm_single_file, pipeline};
use sd_vae::{AutoencoderKL, VaeConfig};

fn folder_vae(model: &str) -> AutoencoderKL<CpuBackend> {
    let dir = pipeline(model);
    let store = WeightStore::open(&dir).unwrap();
    let config = VaeConfig::from_file(dir.join("vae/config.json")).unwrap();
    AutoencoderKL::from_store(&CpuBackend::new(), config, &store).unwrap()
}

fn check_decode_and_encode(label: &str, vae: &AutoencoderKL<CpuBackend>, goldens: &Goldens) {
    for case in ["decode_square", "decode_nonsquare"] {
        let latents = goldens.tensor(&format!("{case}/latents"));
        let image = vae.decode(&CpuBackend::new(), &latents).unwrap();
        assert_matches_golden(
            &format!("{label} {case}"),
            &image,
            &goldens.host(&format!("{case}/image")),
        );
    }
    let image = goldens.tensor("encode/image");
    let dist = vae.encode(&CpuBackend::new(), &image).unwrap();
    assert_eq!(dist.mean.shape()[1], vae.latent_channels());
    assert_matches_golden(
        &format!("{label} encode mean"),
        &dist.mean,
        &goldens.host("encode/mean"),
    );
    assert_matches_golden(
        &format!("{label} encode logvar"),
        &dist.logvar,
        &goldens.host("encode/logvar"),
    );
}

#[test]
fn tiny_sd_vae_matches_diffusers() {
    let vae = folder_vae("tiny-sd");
    assert_eq!(vae.downscale_factor(), 2);
    check_decode_and_encode(
        "tiny-sd",
        &vae,
        &Goldens::open("tiny-sd", "vae.safetensors"),
    );
}

#[test]
fn tiny_sd_alt_vae_matches_diffusers() {
    // Three levels (scale factor 4), 8 groups.
    let vae = folder_vae("tiny-sd-alt");
    assert_eq!(vae.downscale_factor(), 4);
    check_decode_and_encode(
        "tiny-sd-alt",
        &vae,
        &Goldens::open("tiny-sd-alt", "vae.safetensors"),
    );
}

#[test]
fn ldm_single_file_vae_matches_diffusers() {
    // The LDM file stores the mid-block attention projections as 1×1 convs.
    let store = WeightStore::open(ldm_single_file()).unwrap();
    let config = VaeConfig::from_file(pipeline("tiny-sd").join("vae/config.json")).unwrap();
    let vae = AutoencoderKL::from_store(&CpuBackend::new(), config, &store).unwrap();
    check_decode_and_encode(
        "tiny-sd (LDM single file)",
        &vae,
        &Goldens::open("tiny-sd", "vae.safetensors"),
    );
}
