//! The UNet against diffusers' outputs (fixtures/goldens/<model>/unet.safetensors, written by
//! tools/make_fixtures.py): every case of both tiny configs and of the inpainting UNet, loaded
//! from the diffusers folders, and tiny-sd's UNet loaded from its LDM single-file twin; plus the
//! config options SD 1.5 leaves at their defaults (fixtures/unet-variant, written by
//! tools/unet_variant_goldens.py).

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_core::cpu::CpuBackend;
use sd_core::weights::{Component, WeightStore};
use sd_testkit::{Goldens, assert_matches_golden, ldm_single_file, pipeline};
use sd_unet::{UNet2DConditionModel, UNetConfig};

fn check_all_cases(label: &str, unet: &UNet2DConditionModel<CpuBackend>, goldens: &Goldens) {
    let cases = goldens.cases();
    assert!(!cases.is_empty());
    for case in cases {
        let sample = goldens.tensor(&format!("{case}/sample"));
        let timestep = goldens.scalar(&format!("{case}/timestep"));
        let context = goldens.tensor(&format!("{case}/encoder_hidden_states"));
        let out = unet
            .forward(&CpuBackend::new(), &sample, f64::from(timestep), &context)
            .unwrap();
        let expected = goldens.host(&format!("{case}/out"));
        assert_matches_golden(&format!("{label} {case}"), &out, &expected);
    }
}

fn folder_unet(model: &str) -> UNet2DConditionModel<CpuBackend> {
    let dir = pipeline(model);
    let store = WeightStore::open(&dir).unwrap();
    let config = UNetConfig::from_file(dir.join("unet/config.json")).unwrap();
    UNet2DConditionModel::from_store(&CpuBackend::new(), config, &store).unwrap()
}

#[test]
fn tiny_sd_unet_matches_diffusers() {
    check_all_cases(
        "tiny-sd",
        &folder_unet("tiny-sd"),
        &Goldens::open("tiny-sd", "unet.safetensors"),
    );
}

#[test]
fn tiny_sd_alt_unet_matches_diffusers() {
    // Per-block head counts, linear projections, three levels, 8 groups.
    check_all_cases(
        "tiny-sd-alt",
        &folder_unet("tiny-sd-alt"),
        &Goldens::open("tiny-sd-alt", "unet.safetensors"),
    );
}

/// A UNet from a lone `unet/` component folder (no model_index.json).
fn component_folder_unet(dir: &std::path::Path) -> UNet2DConditionModel<CpuBackend> {
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    let store = WeightStore::open_component_files(Component::Unet, &[weights]).unwrap();
    let config = UNetConfig::from_file(dir.join("config.json")).unwrap();
    UNet2DConditionModel::from_store(&CpuBackend::new(), config, &store).unwrap()
}

#[test]
fn inpainting_unet_matches_diffusers() {
    let unet = component_folder_unet(&pipeline("tiny-sd-inpaint").join("unet"));
    assert_eq!(unet.config().in_channels, 9);
    check_all_cases(
        "tiny-sd-inpaint",
        &unet,
        &Goldens::open("tiny-sd-inpaint", "unet.safetensors"),
    );
}

#[test]
fn ldm_single_file_unet_matches_diffusers() {
    let store = WeightStore::open(ldm_single_file()).unwrap();
    let config = UNetConfig::from_file(pipeline("tiny-sd").join("unet/config.json")).unwrap();
    let unet = UNet2DConditionModel::from_store(&CpuBackend::new(), config, &store).unwrap();
    check_all_cases(
        "tiny-sd (LDM single file)",
        &unet,
        &Goldens::open("tiny-sd", "unet.safetensors"),
    );
}

#[test]
fn unet_config_variants_match_diffusers() {
    // Per-block lists, only_cross_attention, sin-first features with freq_shift 1, a 24-wide
    // time embedding, center_input_sample, 5×5/1×1 conv_in/conv_out, the asymmetric
    // downsample pad, mid_block_scale_factor 2 and an ignored resnet_out_scale_factor.
    let unet = component_folder_unet(&pipeline("unet-variant").join("unet"));
    check_all_cases(
        "unet-variant",
        &unet,
        &Goldens::open("unet-variant", "unet.safetensors"),
    );
}
