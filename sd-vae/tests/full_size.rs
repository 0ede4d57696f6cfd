//! The full-size SD 1.5 VAE (random weights) against diffusers: a 512² decode and a 256²
//! encode. Needs the files of `python tools/full_size_goldens.py write` (not committed), so it
//! is ignored by default:
//!
//!     cargo test --release -p sd-vae --test full_size -- --ignored --nocapture

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_core::LatentCodec;
use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;
use sd_testkit::{assert_matches_golden, full_size_dir, full_size_goldens};
use sd_vae::{AutoencoderKL, VaeConfig};

#[test]
#[ignore = "needs tools/full_size_goldens.py output (1.9 GB)"]
fn sd15_vae_decode_512_and_encode_256_match_diffusers() {
    let goldens = full_size_goldens();
    let store = WeightStore::open(full_size_dir()).unwrap();
    // The built-in SD 1.5 config (what single-file checkpoints use); 512² is not tiled.
    let vae =
        AutoencoderKL::from_store(&CpuBackend::new(), VaeConfig::sd15().unwrap(), &store).unwrap();
    drop(store);
    let image = vae
        .decode(&CpuBackend::new(), &goldens.tensor("vae/latents"))
        .unwrap();
    assert_matches_golden(
        "SD 1.5 VAE decode 512x512",
        &image,
        &goldens.host("vae/image"),
    );
    let dist = vae
        .encode(&CpuBackend::new(), &goldens.tensor("vae/encode_image"))
        .unwrap();
    assert_matches_golden(
        "SD 1.5 VAE encode mean",
        &dist.mean,
        &goldens.host("vae/encode_mean"),
    );
    assert_matches_golden(
        "SD 1.5 VAE encode logvar",
        &dist.logvar,
        &goldens.host("vae/encode_logvar"),
    );
}
