//! Tiled encode/decode against diffusers with `enable_tiling()` (fixtures/goldens/<model>/
//! vae_tiling.safetensors, written by tools/vae_tiling_goldens.py with 32-pixel tiles over
//! 80×56 images: full, partial and overlap-only edge tiles), tiled vs untiled, and latent
//! sampling against `latent_dist.sample(generator)`.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;
use sd_core::{Backend, LatentCodec, TorchGenerator};
use sd_testkit::{Goldens, assert_matches_golden, pipeline};
use sd_vae::{AutoencoderKL, TileMode, Tiling, VaeConfig};

const MODELS: [&str; 2] = ["tiny-sd", "tiny-sd-alt"];

fn vae(model: &str) -> AutoencoderKL<CpuBackend> {
    let dir = pipeline(model);
    let store = WeightStore::open(&dir).unwrap();
    let config = VaeConfig::from_file(dir.join("vae/config.json")).unwrap();
    AutoencoderKL::from_store(&CpuBackend::new(), config, &store).unwrap()
}

/// The VAE tiling as the goldens were made (diffusers' `enable_tiling()`, small tiles).
fn tiled_as_goldens(model: &str, goldens: &Goldens) -> AutoencoderKL<CpuBackend> {
    let mut vae = vae(model);
    vae.set_tiling(Tiling {
        mode: TileMode::On,
        tile_sample_size: goldens.metadata("tile_sample_size").parse().unwrap(),
        overlap_factor: goldens.metadata("tile_overlap_factor").parse().unwrap(),
    });
    vae
}

#[test]
fn tiled_decode_matches_diffusers_enable_tiling() {
    for model in MODELS {
        let goldens = Goldens::open(model, "vae_tiling.safetensors");
        let vae = tiled_as_goldens(model, &goldens);
        let image = vae
            .decode(&CpuBackend::new(), &goldens.tensor("tiled_decode/latents"))
            .unwrap();
        assert_matches_golden(
            &format!("{model} tiled decode"),
            &image,
            &goldens.host("tiled_decode/image"),
        );
    }
}

#[test]
fn tiled_encode_matches_diffusers_enable_tiling() {
    for model in MODELS {
        let goldens = Goldens::open(model, "vae_tiling.safetensors");
        let vae = tiled_as_goldens(model, &goldens);
        let dist = vae
            .encode(&CpuBackend::new(), &goldens.tensor("tiled_encode/image"))
            .unwrap();
        let label = format!("{model} tiled encode");
        assert_matches_golden(
            &format!("{label} mean"),
            &dist.mean,
            &goldens.host("tiled_encode/mean"),
        );
        assert_matches_golden(
            &format!("{label} logvar"),
            &dist.logvar,
            &goldens.host("tiled_encode/logvar"),
        );
    }
}

/// Tiles normalise with their own group-norm statistics, so tiled ≠ untiled; with these random
/// weights and 32-pixel tiles diffusers' own tiled decode differs from its untiled one by
/// 0.087 (tiny-sd) and 0.195 (tiny-sd-alt) mean abs on images of max |x| ≈ 3. A misplaced or
/// unblended tile gives errors of the order of the image itself (≈ 1 mean abs).
const TILED_VS_UNTILED_MEAN_ABS: f32 = 0.25;

#[test]
fn tiled_decode_approximates_untiled() {
    for model in MODELS {
        let goldens = Goldens::open(model, "vae_tiling.safetensors");
        let latents = goldens.tensor("tiled_decode/latents");
        let tiled = tiled_as_goldens(model, &goldens)
            .decode(&CpuBackend::new(), &latents)
            .unwrap();
        let mut untiled_vae = vae(model);
        untiled_vae.set_tiling(Tiling {
            mode: TileMode::Off,
            ..untiled_vae.tiling()
        });
        let untiled = untiled_vae.decode(&CpuBackend::new(), &latents).unwrap();
        let (tiled, untiled) = (
            CpuBackend::new().download(&tiled).unwrap(),
            CpuBackend::new().download(&untiled).unwrap(),
        );
        assert_eq!(tiled.shape(), untiled.shape());
        let mean_abs = (&tiled - &untiled).mapv(f32::abs).mean().unwrap();
        println!("{model}: tiled vs untiled decode, mean abs difference {mean_abs:.4}");
        assert!(mean_abs < TILED_VS_UNTILED_MEAN_ABS, "{model}: {mean_abs}");
        assert!(mean_abs > 0.0, "{model}: tiling did not apply");
    }
}

#[test]
fn auto_tiling_switches_on_above_the_pixel_limit() {
    let goldens = Goldens::open("tiny-sd", "vae_tiling.safetensors");
    let latents = goldens.tensor("tiled_decode/latents"); // 80×56 pixels
    let expected_tiled = goldens.host("tiled_decode/image");
    let mut vae = tiled_as_goldens("tiny-sd", &goldens);
    let goldens_tiling = vae.tiling();
    let auto = |max_untiled_pixels| Tiling {
        mode: TileMode::Auto { max_untiled_pixels },
        ..goldens_tiling
    };
    vae.set_tiling(auto(80 * 56 - 1));
    let image = vae.decode(&CpuBackend::new(), &latents).unwrap();
    assert_matches_golden("auto, above the limit", &image, &expected_tiled);
    vae.set_tiling(auto(80 * 56));
    let image = vae.decode(&CpuBackend::new(), &latents).unwrap();
    let diff = sd_testkit::max_abs_diff(&image, &expected_tiled);
    assert!(
        diff > 1e-2,
        "at the limit the decode must not tile (diff {diff})"
    );
}

#[test]
fn sample_matches_diffusers_latent_dist_sample() {
    for model in MODELS {
        let goldens = Goldens::open(model, "vae_tiling.safetensors");
        let dist = vae(model)
            .encode(&CpuBackend::new(), &goldens.tensor("sample/image"))
            .unwrap();
        let seed: u64 = goldens.metadata("sample_seed").parse().unwrap();
        let mut generator = TorchGenerator::new(seed);
        let latents = dist
            .download(&CpuBackend::new())
            .unwrap()
            .sample(&mut generator);
        let latents = CpuBackend::new().upload(&latents).unwrap();
        assert_matches_golden(
            &format!("{model} latent_dist.sample(seed {seed})"),
            &latents,
            &goldens.host("sample/latents"),
        );
    }
}
