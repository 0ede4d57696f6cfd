//! Shared test helpers: the fixture paths and loading the tiny pipelines.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sd_core::cpu::CpuBackend;
use sd_core::on_demand::OnDemand;
use sd_core::pipeline::Pipeline;
use sd_core::weights::{Component, WeightStore};
use stable_diffusion::clip::{ClipTextEncoder, ClipTextTransformer};
use stable_diffusion::configs::ModelConfigs;
use stable_diffusion::unet::{UNet2DConditionModel, UNetConfig};
use stable_diffusion::vae::AutoencoderKL;
use stable_diffusion::{LoadOptions, StableDiffusion};

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
    let pipeline = Pipeline::new(b, ClipTextEncoder::new(text, configs.tokenizer), unet, vae)
        .with_default_size(64, 64);
    StableDiffusion::from_pipeline(pipeline, configs.scheduler, dir)
}
