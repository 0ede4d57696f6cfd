//! LyCORIS Tucker (CP) conv factors — LoHa `hada_t1`/`hada_t2`, LoKr `lokr_t2` — against the
//! deltas LyCORIS' formula gives (`tools/fixturegen/lycoris_tucker.py`, one einsum per factor;
//! see `fixtures/goldens/lycoris_tucker.json`): the weight the overlay makes, minus the model's,
//! is `scale · ΔW`.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use sd_core::weights::{Component, SafetensorsFile, UnetLayout, WeightStore};
use serde_json::Value;
use stable_diffusion::lora::{LoraOverlay, LoraSpec};
use support::{fixtures, goldens};

/// The merge is one f32 multiply-add per element after f32 products of a few terms: a few
/// ulps of the delta's largest entries.
const DELTA_TOLERANCE: f32 = 1e-6;

#[test]
fn tucker_loha_and_lokr_give_lycoris_deltas() {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(goldens().join("lycoris_tucker.json")).unwrap(),
    )
    .unwrap();
    let golden = SafetensorsFile::open(goldens().join("lycoris_tucker.safetensors")).unwrap();
    let model = fixtures().join("tiny-sd");
    let store = WeightStore::open(&model).unwrap();
    let layout = UnetLayout::from_config_file(model.join("unet/config.json")).unwrap();
    for (case, file) in json["files"].as_object().unwrap() {
        let module = json["modules"][case].as_str().unwrap();
        let spec = LoraSpec::new(fixtures().join(file.as_str().unwrap()), 1.0);
        let (overlay, report) = LoraOverlay::load(&store, &layout, &[spec]).unwrap();
        assert_eq!(report.files[0].applied, 1, "{case}");
        let layered = overlay.apply_to(&store);
        let name = format!("{module}.weight");
        let before = store
            .component(Component::Unet)
            .unwrap()
            .get(&name)
            .unwrap();
        let after = layered
            .component(Component::Unet)
            .unwrap()
            .get(&name)
            .unwrap();
        let expected = golden.get(module).unwrap();
        assert_eq!(expected.shape(), before.shape(), "{case}");
        let scale = expected.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = (&(&after - &before) - &expected)
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()));
        assert!(
            worst <= DELTA_TOLERANCE * scale.max(1.0),
            "{case}: {worst} (largest delta {scale})"
        );
    }
}

#[test]
fn a_tucker_core_that_does_not_fit_its_factors_is_refused_naming_the_module() {
    let source = fixtures().join("lora/tiny-sd/loha_tucker.safetensors");
    let file = SafetensorsFile::open(&source).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .names()
        .map(|name| {
            let t = file.get(name).unwrap();
            let bytes = t.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name.to_string(), t.shape().to_vec(), bytes)
        })
        .collect();
    // hada_t1 with its rank axes swapped for a wrong size: [r, r + 1, 3, 3].
    let core = tensors
        .iter_mut()
        .find(|(n, _, _)| n.ends_with(".hada_t1"))
        .unwrap();
    core.1[1] += 1;
    core.2 = vec![0; core.1.iter().product::<usize>() * 4];
    let views = tensors.iter().map(|(name, shape, bytes)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .unwrap();
        (name.as_str(), view)
    });
    let dir = std::env::temp_dir().join(format!("sd-rs-tucker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad_core.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();

    let model = fixtures().join("tiny-sd");
    let store = WeightStore::open(&model).unwrap();
    let layout = UnetLayout::from_config_file(model.join("unet/config.json")).unwrap();
    let error = LoraOverlay::load(&store, &layout, &[LoraSpec::new(&path, 1.0)]).unwrap_err();
    let message = error.to_string();
    for needle in [
        "Tucker core",
        "lora_unet_down_blocks_0_resnets_0_conv1",
        "[3, 4, 3, 3]",
    ] {
        assert!(
            message.contains(needle),
            "`{needle}` missing from: {message}"
        );
    }
}
