//! LoRA files: argument parsing, what a file is matched against, and every kind of bad file,
//! each failing with a typed error that names the file, the key and the shapes.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use sd_core::Error;
use sd_core::weights::WeightStore;
use stable_diffusion::lora::LoraSpec;
use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
use support::fixtures;

/// A tensor of a hand-made LoRA file: name, shape, the value of every element.
type RawTensor<'a> = (&'a str, Vec<usize>, f32);

const TO_Q: &str = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q";

/// `[out, in]` of a module's weight in tiny-sd.
fn shape_of(module: &str) -> Vec<usize> {
    let store = WeightStore::open(fixtures().join("tiny-sd")).unwrap();
    let weights = store.unet().unwrap();
    weights
        .info(&format!("{module}.weight"))
        .unwrap()
        .shape
        .clone()
}

/// A LoRA file of f32 tensors (name, shape, value) in a fresh temp folder.
fn write_lora(test: &str, tensors: &[RawTensor<'_>]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-rs-lora-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, value)| {
            let count: usize = shape.iter().product();
            let bytes = std::iter::repeat_n(*value, count)
                .flat_map(f32::to_le_bytes)
                .collect();
            (name.to_string(), shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    let path = dir.join("lora.safetensors");
    std::fs::write(
        &path,
        safetensors::serialize(views, None::<HashMap<_, _>>).unwrap(),
    )
    .unwrap();
    path
}

fn load(
    lora: &Path,
    multiplier: f32,
) -> sd_core::Result<StableDiffusion<sd_core::cpu::CpuBackend>> {
    let options = LoadOptions::default().lora(LoraSpec::new(lora, multiplier));
    StableDiffusion::load(fixtures().join("tiny-sd"), options)
}

fn kohya(module: &str) -> String {
    format!("lora_unet_{}", module.replace('.', "_"))
}

#[test]
fn lora_arguments_parse_as_a1111_writes_them() {
    let spec = LoraSpec::parse("style.safetensors").unwrap();
    assert_eq!((spec.text_encoder, spec.unet), (1.0, 1.0));
    let spec = LoraSpec::parse("dir/style.safetensors:0.6").unwrap();
    assert_eq!(spec.path, PathBuf::from("dir/style.safetensors"));
    assert_eq!((spec.text_encoder, spec.unet), (0.6, 0.6));
    let spec = LoraSpec::parse("style.safetensors:0.5:-1").unwrap();
    assert_eq!((spec.text_encoder, spec.unet), (0.5, -1.0));
    for bad in [":0.5", "style.safetensors:1e40", "style.safetensors:nan"] {
        let err = LoraSpec::parse(bad).unwrap_err().to_string();
        assert!(err.contains("--lora"), "{bad}: {err}");
    }
}

#[test]
fn a_partly_matching_file_applies_what_fits_and_reports_the_rest() {
    let [out, inp] = shape_of(TO_Q)[..] else {
        panic!()
    };
    let module = kohya(TO_Q);
    let path = write_lora(
        "partial",
        &[
            (&format!("{module}.lora_down.weight"), vec![2, inp], 0.01),
            (&format!("{module}.lora_up.weight"), vec![out, 2], 0.01),
            (
                "lora_unet_no_such_block_to_q.lora_down.weight",
                vec![2, 4],
                0.0,
            ),
            (
                "lora_unet_no_such_block_to_q.lora_up.weight",
                vec![4, 2],
                0.0,
            ),
        ],
    );
    let sd = load(&path, 1.0).unwrap();
    let file = &sd.lora_report().files[0];
    assert_eq!(file.applied, 1);
    assert_eq!(file.skipped, ["lora_unet_no_such_block_to_q".to_string()]);
    // And it changes the image; multiplier 0 does not.
    let request = GenerationRequest::new("a fox").steps(2).seed(1);
    let plain = StableDiffusion::load(fixtures().join("tiny-sd"), LoadOptions::default())
        .unwrap()
        .generate(&request)
        .unwrap();
    assert!(sd.generate(&request).unwrap().latents != plain.latents);
    let zero = load(&path, 0.0).unwrap().generate(&request).unwrap();
    assert!(
        zero.latents == plain.latents,
        "multiplier 0 changed the image"
    );
}

#[test]
fn bad_lora_files_are_typed_errors_naming_what_is_wrong() {
    let [out, inp] = shape_of(TO_Q)[..] else {
        panic!()
    };
    let module = kohya(TO_Q);
    let down = format!("{module}.lora_down.weight");
    let up = format!("{module}.lora_up.weight");
    // (case, the file's tensors, what the message must name)
    let cases: Vec<(&str, Vec<RawTensor<'_>>, Vec<String>)> = vec![
        (
            "sdxl",
            vec![(
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                vec![2, 4],
                0.0,
            )],
            vec!["SDXL".into(), "lora_te1_".into()],
        ),
        (
            "nothing-fits",
            vec![
                ("lora_unet_nowhere.lora_down.weight", vec![2, 4], 0.0),
                ("lora_unet_nowhere.lora_up.weight", vec![4, 2], 0.0),
            ],
            vec!["lora_unet_nowhere".into()],
        ),
        (
            "ranks-differ",
            vec![(&down, vec![2, inp], 0.0), (&up, vec![out, 3], 0.0)],
            vec![module.clone(), "ranks".into()],
        ),
        (
            "wrong-width",
            vec![(&down, vec![2, inp + 1], 0.0), (&up, vec![out, 2], 0.0)],
            vec![module.clone(), format!("{:?}", [out, inp])],
        ),
        (
            "half-a-pair",
            vec![(&down, vec![2, inp], 0.0)],
            vec![module.clone(), "up".into()],
        ),
    ];
    for (name, tensors, expected) in cases {
        let path = write_lora(name, &tensors);
        let err = load(&path, 1.0).unwrap_err();
        let text = err.to_string();
        for part in expected {
            assert!(text.contains(&part), "{name}: {part:?} not in: {text}");
        }
        if name == "wrong-width" {
            assert!(matches!(err, Error::TensorShape { .. }), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
    }
    let missing = load(Path::new("/nonexistent/lora.safetensors"), 1.0).unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("/nonexistent/lora.safetensors"),
        "{missing}"
    );
}

/// Another LoRA set on the same checkpoint, without opening it again: the same images as
/// loading with that set, and back to the bare model with none.
#[test]
fn with_loras_swaps_the_set_on_the_loaded_checkpoint() {
    let lora = fixtures().join("lora/tiny-sd/kohya_diffusers.safetensors");
    let request = GenerationRequest::new("a fox").steps(3).seed(4);
    let bare = StableDiffusion::load(fixtures().join("tiny-sd"), LoadOptions::default()).unwrap();
    let loaded_with = load(&lora, 0.7).unwrap();
    let swapped = bare
        .with_loras(
            sd_core::cpu::CpuBackend::new(),
            &[LoraSpec::new(&lora, 0.7)],
        )
        .unwrap();
    assert_eq!(swapped.lora_report(), loaded_with.lora_report());
    let expected = loaded_with.generate(&request).unwrap();
    assert!(swapped.generate(&request).unwrap().latents == expected.latents);
    let back = swapped
        .with_loras(sd_core::cpu::CpuBackend::new(), &[])
        .unwrap();
    assert!(back.generate(&request).unwrap().latents == bare.generate(&request).unwrap().latents);
}

/// A LoRA trained on a 4-channel UNet adapts the 9-channel inpainting UNet's `conv_in` on its
/// first 4 input channels (the latents), as A1111 pads it, and leaves the mask and masked-image
/// channels alone.
#[test]
fn a_conv_in_delta_covers_the_first_channels_of_an_inpainting_unet() {
    use sd_core::weights::{Component, UnetLayout};
    use stable_diffusion::lora::LoraOverlay;

    let unet_dir = fixtures().join("tiny-sd-inpaint").join("unet");
    let store = WeightStore::open_component_files(
        Component::Unet,
        &[unet_dir.join("diffusion_pytorch_model.safetensors")],
    )
    .unwrap();
    let layout = UnetLayout::from_config_file(unet_dir.join("config.json")).unwrap();
    let shape = store
        .unet()
        .unwrap()
        .info("conv_in.weight")
        .unwrap()
        .shape
        .clone();
    assert_eq!(shape[1], 9);
    let path = write_lora(
        "conv-in",
        &[
            ("lora_unet_conv_in.lora_down.weight", vec![2, 4, 3, 3], 0.1),
            (
                "lora_unet_conv_in.lora_up.weight",
                vec![shape[0], 2, 1, 1],
                0.2,
            ),
        ],
    );
    let (overlay, _) = LoraOverlay::load(&store, &layout, &[LoraSpec::new(&path, 1.0)]).unwrap();
    let layered = overlay.apply_to(&store);
    let before = store
        .unet()
        .unwrap()
        .get_shaped("conv_in.weight", &shape)
        .unwrap();
    let after = layered
        .unet()
        .unwrap()
        .get_shaped("conv_in.weight", &shape)
        .unwrap();
    // ΔW = up · down = 2 · 0.2 · 0.1 per element, scale 1 (no alpha).
    for ((index, b), a) in before.indexed_iter().zip(after.iter()) {
        let expected = if index[1] < 4 { b + 0.04 } else { *b };
        assert!((a - expected).abs() < 1e-6, "{index:?}: {a} vs {expected}");
    }
}

/// `from_store` cannot resolve LDM names, so it refuses LoRA options instead of ignoring them.
#[test]
fn from_store_refuses_lora_options_rather_than_ignoring_them() {
    use stable_diffusion::configs::ModelConfigs;
    use std::sync::Arc;

    let dir = fixtures().join("tiny-sd");
    let store = Arc::new(WeightStore::open(&dir).unwrap());
    let configs = ModelConfigs::from_folder(&dir).unwrap();
    let lora = fixtures().join("lora/tiny-sd/kohya_diffusers.safetensors");
    let options = LoadOptions::default().lora(LoraSpec::new(&lora, 1.0));
    let err =
        StableDiffusion::from_store(sd_core::cpu::CpuBackend::new(), store, configs, &options)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("kohya_diffusers") && err.contains("with_loras"),
        "{err}"
    );
}
