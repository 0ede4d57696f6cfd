//! Bad configs, weights and inputs give typed errors naming the field, tensor or argument.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use serde_json::{Value, json};

use sd_core::cpu::{CpuBackend, CpuTensor};
use sd_core::weights::WeightStore;
use sd_core::{Backend, Error, HostTensor, LatentCodec};
use sd_testkit::pipeline;
use sd_vae::{AutoencoderKL, VaeConfig};

/// tiny-sd's VAE config with `edit` applied, parsed.
fn parse_edited(
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> sd_core::Result<VaeConfig> {
    let text = std::fs::read_to_string(pipeline("tiny-sd").join("vae/config.json")).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    edit(json.as_object_mut().unwrap());
    VaeConfig::from_json(&json.to_string(), "edited/vae/config.json")
}

/// A change to a config's JSON object.
type Edit = fn(&mut serde_json::Map<String, Value>);

fn config_error_field(result: sd_core::Result<VaeConfig>) -> String {
    match result {
        Err(Error::Config { field, reason, .. }) => {
            println!("{field}: {reason}");
            field
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn config_errors_name_the_field() {
    let cases: [(&str, Edit); 7] = [
        ("down_block_types[0]", |c| {
            c["down_block_types"] = json!(["AttnDownEncoderBlock2D", "DownEncoderBlock2D"])
        }),
        ("up_block_types", |c| {
            c["up_block_types"] = json!(["UpDecoderBlock2D"])
        }),
        ("block_out_channels", |c| {
            c["block_out_channels"] = json!([32, 40])
        }),
        ("latent_channels", |c| {
            c.remove("latent_channels");
        }),
        ("block_out_channels", |c| {
            c.remove("block_out_channels");
        }),
        ("layers_per_block", |c| c["layers_per_block"] = json!(0)),
        ("scaling_factor", |c| c["scaling_factor"] = json!(-1.0)),
    ];
    for (expected, edit) in cases {
        assert_eq!(config_error_field(parse_edited(edit)), expected);
    }
}

#[test]
fn builtin_sd15_config_has_sd15_shapes() {
    let config = VaeConfig::sd15().unwrap();
    assert_eq!(config.block_out_channels, [128, 256, 512, 512]);
    assert_eq!(config.downscale_factor(), 8);
    assert_eq!(config.scaling_factor, 0.18215);
    assert_eq!(config.sample_size, 512);
}

#[test]
fn a_config_disagreeing_with_the_weights_names_the_tensor() {
    let store = WeightStore::open(pipeline("tiny-sd")).unwrap();
    let config = parse_edited(|c| c["latent_channels"] = json!(8)).unwrap();
    match AutoencoderKL::from_store(&CpuBackend::new(), config, &store) {
        Err(Error::TensorShape { name, .. }) => assert_eq!(name, "quant_conv.weight"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    let config = parse_edited(|c| c["layers_per_block"] = json!(2)).unwrap();
    match AutoencoderKL::from_store(&CpuBackend::new(), config, &store) {
        Err(Error::MissingTensor { name, .. }) => {
            assert!(
                name.starts_with("encoder.down_blocks.0.resnets.1."),
                "{name}"
            )
        }
        other => panic!("expected a missing tensor, got {other:?}"),
    }
}

fn zeros(shape: &[usize]) -> CpuTensor {
    CpuBackend::new()
        .upload(&HostTensor::zeros(shape.to_vec()))
        .unwrap()
}

#[test]
fn images_and_latents_of_the_wrong_shape_are_refused() {
    let dir = pipeline("tiny-sd-alt"); // downscale factor 4
    let store = WeightStore::open(&dir).unwrap();
    let config = VaeConfig::from_file(dir.join("vae/config.json")).unwrap();
    let vae = AutoencoderKL::from_store(&CpuBackend::new(), config, &store).unwrap();
    for shape in [[1, 3, 30, 32], [1, 4, 32, 32], [0, 3, 32, 32]] {
        match vae.encode(&CpuBackend::new(), &zeros(&shape)) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "image"),
            other => panic!("{shape:?}: expected an invalid argument, got {other:?}"),
        }
    }
    for shape in [vec![1, 3, 8, 8], vec![1, 4, 8], vec![1, 4, 0, 8]] {
        match vae.decode(&CpuBackend::new(), &zeros(&shape)) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "latents"),
            other => panic!("{shape:?}: expected an invalid argument, got {other:?}"),
        }
    }
}
