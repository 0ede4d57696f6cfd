//! Overlays reach the models: a layered store changes the images, the low-memory rebuild of the
//! UNet and VAE reads through the overlays again, and the merge happens in f32 before the bf16
//! path packs the weights.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sd_core::cpu::{CpuBackend, Precision};
use sd_core::weights::{Component, Overlay, WeightStore};
use sd_core::{HostTensor, Result};
use stable_diffusion::configs::ModelConfigs;
use stable_diffusion::{Generation, GenerationRequest, LoadOptions, StableDiffusion};
use support::fixtures;

/// Scales the UNet's output convolution (a stand-in for a LoRA delta on a UNet weight), counting
/// how often it is read.
#[derive(Debug)]
struct ScaleConvOut {
    factor: f32,
    reads: AtomicUsize,
}

impl ScaleConvOut {
    fn new(factor: f32) -> Arc<Self> {
        Arc::new(Self {
            factor,
            reads: AtomicUsize::new(0),
        })
    }
}

impl Overlay for ScaleConvOut {
    fn describe(&self) -> String {
        format!("conv_out × {}", self.factor)
    }

    fn touches(&self, component: Component, name: &str) -> bool {
        component == Component::Unet && name == "conv_out.weight"
    }

    fn apply(&self, _: Component, _: &str, below: Option<HostTensor>) -> Result<HostTensor> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(below.unwrap().mapv(|v| v * self.factor))
    }
}

fn model(
    backend: CpuBackend,
    overlay: Option<Arc<dyn Overlay>>,
    low_memory: bool,
) -> StableDiffusion<CpuBackend> {
    let dir = fixtures().join("tiny-sd");
    let mut store = WeightStore::open(&dir).unwrap();
    if let Some(overlay) = overlay {
        store = store.with_overlay(overlay);
    }
    let options = LoadOptions::default().low_memory(low_memory);
    let configs = ModelConfigs::from_folder(&dir).unwrap();
    StableDiffusion::from_store(backend, Arc::new(store), configs, &options).unwrap()
}

fn generate(sd: &StableDiffusion<CpuBackend>) -> Generation {
    let request = GenerationRequest::new("a red fox").steps(3).seed(9);
    sd.generate(&request).unwrap()
}

#[test]
fn an_overlay_changes_the_image_and_the_identity_overlay_does_not() {
    let plain = generate(&model(CpuBackend::new(), None, false));
    let identity = generate(&model(
        CpuBackend::new(),
        Some(ScaleConvOut::new(1.0)),
        false,
    ));
    assert!(
        identity.latents == plain.latents,
        "a no-op overlay changed the latents"
    );
    let scaled = generate(&model(
        CpuBackend::new(),
        Some(ScaleConvOut::new(0.5)),
        false,
    ));
    assert!(
        scaled.latents != plain.latents,
        "the overlay did not reach the UNet"
    );
}

#[test]
fn the_low_memory_rebuild_reads_through_the_overlays_again() {
    let resident = generate(&model(
        CpuBackend::new(),
        Some(ScaleConvOut::new(0.5)),
        false,
    ));
    let overlay = ScaleConvOut::new(0.5);
    let low = model(CpuBackend::new(), Some(overlay.clone()), true);
    for round in 0..2 {
        let generation = generate(&low);
        assert!(
            generation.latents == resident.latents,
            "round {round}: the rebuilt UNet lost the overlay"
        );
    }
    // Built at load (used by the first generation, then released), rebuilt for the second.
    assert_eq!(overlay.reads.load(Ordering::Relaxed), 2);
}

#[test]
fn overlays_are_merged_before_bf16_packing() {
    let bf16 = || CpuBackend::with_precision(Precision::Bf16);
    let plain = generate(&model(bf16(), None, false));
    let identity = generate(&model(bf16(), Some(ScaleConvOut::new(1.0)), false));
    assert!(
        identity.latents == plain.latents,
        "bf16: a no-op overlay changed the latents"
    );
    let scaled = generate(&model(bf16(), Some(ScaleConvOut::new(0.5)), false));
    assert!(
        scaled.latents != plain.latents,
        "bf16: the overlay did not reach the UNet"
    );
}
