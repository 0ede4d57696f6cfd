//! Shared test helpers: the fixture paths and loading the tiny pipelines.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves
#![allow(dead_code)]

pub mod cli;

use std::path::{Path, PathBuf};

use sd_core::HostTensor;
use sd_core::cpu::CpuBackend;
use sd_core::on_demand::OnDemand;
use sd_core::pipeline::Pipeline;
use sd_core::weights::{Component, WeightStore};
use stable_diffusion::clip::{ClipTextEncoder, ClipTextTransformer};
use stable_diffusion::configs::ModelConfigs;
use stable_diffusion::png::read_rgb;
use stable_diffusion::unet::{UNet2DConditionModel, UNetConfig};
use stable_diffusion::vae::AutoencoderKL;
use stable_diffusion::{Generation, LoadOptions, RgbImage, StableDiffusion};

pub use sd_testkit::fixtures;

pub fn goldens() -> PathBuf {
    fixtures().join("goldens")
}

/// A tiny pipeline (folder or single file).
pub fn load_tiny(path: &Path, options: LoadOptions) -> StableDiffusion<CpuBackend> {
    StableDiffusion::load(path, options)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// tiny-sd with the 9-channel UNet of tiny-sd-inpaint, as the inpainting golden was made.
pub fn load_tiny_inpainting() -> StableDiffusion<CpuBackend> {
    let b = CpuBackend::new();
    let dir = fixtures().join("tiny-sd");
    let configs = ModelConfigs::from_folder(&dir).unwrap();
    let store = WeightStore::open(&dir).unwrap();
    let unet_dir = fixtures().join("tiny-sd-inpaint").join("unet");
    let unet_store = WeightStore::open_component_files(
        Component::Unet,
        &[unet_dir.join("diffusion_pytorch_model.safetensors")],
    )
    .unwrap();
    let unet_config = UNetConfig::from_file(unet_dir.join("config.json")).unwrap();
    let text = ClipTextTransformer::load(&b, &store.text_encoder().unwrap(), configs.text_encoder)
        .unwrap();
    let unet = OnDemand::denoiser(
        &b,
        Box::new(move |b: &CpuBackend| {
            UNet2DConditionModel::from_store(b, unet_config.clone(), &unet_store)
        }),
        true,
    )
    .unwrap();
    let vae_config = configs.vae;
    let vae = OnDemand::codec(
        &b,
        Box::new(move |b: &CpuBackend| AutoencoderKL::from_store(b, vae_config.clone(), &store)),
        true,
    )
    .unwrap();
    let vae = stable_diffusion::codec::SdCodec::new(vae);
    let pipeline = Pipeline::new(b, ClipTextEncoder::new(text, configs.tokenizer), unet, vae)
        .with_default_size(64, 64);
    StableDiffusion::from_pipeline(pipeline, configs.scheduler, dir)
}

/// Final latents may differ from diffusers' by this much, relative to their largest magnitude.
/// Single UNet calls agree to ~3e-6 absolute (f32, other summation orders); ten steps of a random
/// model (latents up to ~110 with Euler a) compound that to at most 3.8e-4 absolute, 3.7e-6
/// relative (measured on both tiny pipelines, every run).
pub const LATENT_TOLERANCE: f32 = 2e-5;

/// Decoded pixels may differ by one level where a value sits on a rounding boundary.
pub const PIXEL_TOLERANCE: u8 = 1;

/// The largest difference, in levels, between two images' bytes (same size asserted).
pub fn max_level_difference(ours: &RgbImage, golden: &RgbImage) -> u8 {
    assert_eq!(
        (ours.width(), ours.height()),
        (golden.width(), golden.height()),
        "image sizes differ"
    );
    ours.pixels()
        .iter()
        .zip(golden.pixels())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0)
}

/// A generation against a reference run: final latents within [`LATENT_TOLERANCE`] of
/// `expected`, each image within [`PIXEL_TOLERANCE`] of its golden PNG (`pngs`, in batch order).
pub fn assert_matches_goldens(
    what: &str,
    generation: &Generation,
    expected: &HostTensor,
    pngs: &[PathBuf],
) {
    assert_matches_goldens_within(what, generation, expected, pngs, LATENT_TOLERANCE);
}

/// [`assert_matches_goldens`] with the latents within `latent_tolerance` (relative to their
/// largest magnitude) instead, for runs much longer than ten evaluations.
pub fn assert_matches_goldens_within(
    what: &str,
    generation: &Generation,
    expected: &HostTensor,
    pngs: &[PathBuf],
    latent_tolerance: f32,
) {
    assert_eq!(
        generation.latents.shape(),
        expected.shape(),
        "{what}: latent shape"
    );
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = generation
        .latents
        .iter()
        .zip(expected.iter())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("{what}: latents max abs diff {max_diff:.3e} (max |latent| {scale:.1})");
    assert!(
        max_diff <= latent_tolerance * scale.max(1.0),
        "{what}: latents differ by {max_diff} (max |latent| {scale})"
    );
    assert_eq!(generation.images.len(), pngs.len(), "{what}: image count");
    for (image, png) in generation.images.iter().zip(pngs) {
        let golden = read_rgb(png).unwrap();
        let name = png.display();
        let worst = max_level_difference(image, &golden);
        let off = image
            .pixels()
            .iter()
            .zip(golden.pixels())
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "{what}: {name}: {off} of {} bytes differ, by at most {worst}",
            golden.pixels().len()
        );
        assert!(
            worst <= PIXEL_TOLERANCE,
            "{what}: {name} differs by {worst} levels"
        );
    }
}
