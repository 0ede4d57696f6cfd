//! Bad configs, weights and inputs give typed errors naming the field, tensor or argument.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use serde_json::{Value, json};

use sd_core::cpu::{CpuBackend, CpuTensor};
use sd_core::weights::WeightStore;
use sd_core::{Backend, Denoiser, Error, HostTensor};
use sd_testkit::pipeline;
use sd_unet::{UNet2DConditionModel, UNetConfig};

fn tiny_config_json(model: &str) -> Value {
    let text = std::fs::read_to_string(pipeline(model).join("unet/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// tiny-sd's config with `edit` applied, parsed.
fn parse_edited(
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> sd_core::Result<UNetConfig> {
    let mut json = tiny_config_json("tiny-sd");
    edit(json.as_object_mut().unwrap());
    UNetConfig::from_json(&json.to_string(), "edited/unet/config.json")
}

/// The field named by a config error, panicking on any other outcome.
/// A change to a config's JSON object.
type Edit = fn(&mut serde_json::Map<String, Value>);

fn config_error_field(result: sd_core::Result<UNetConfig>) -> String {
    match result {
        Err(Error::Config {
            field,
            path,
            reason,
        }) => {
            assert_eq!(path.to_str(), Some("edited/unet/config.json"));
            println!("{field}: {reason}");
            field
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn unknown_block_types_name_the_entry() {
    let field = config_error_field(parse_edited(|c| {
        c["down_block_types"] = json!(["DownBlock2D", "SimpleCrossAttnDownBlock2D"]);
    }));
    assert_eq!(field, "down_block_types[1]");
    let field = config_error_field(parse_edited(|c| {
        c["up_block_types"] = json!(["AttnUpBlock2D", "UpBlock2D"]);
    }));
    assert_eq!(field, "up_block_types[0]");
    let field = config_error_field(parse_edited(|c| {
        c["mid_block_type"] = json!("UNetMidBlock2DSimpleCrossAttn");
    }));
    assert_eq!(field, "mid_block_type");
}

#[test]
fn missing_required_fields_are_named() {
    for key in [
        "block_out_channels",
        "down_block_types",
        "cross_attention_dim",
        "in_channels",
    ] {
        let field = config_error_field(parse_edited(|c| {
            c.remove(key);
        }));
        assert_eq!(field, key);
    }
}

#[test]
fn values_of_the_wrong_type_are_named() {
    let field = config_error_field(parse_edited(|c| c["layers_per_block"] = json!("two")));
    assert_eq!(field, "layers_per_block");
    let field = config_error_field(parse_edited(|c| c["block_out_channels"] = json!([32, -64])));
    assert_eq!(field, "block_out_channels[1]");
}

#[test]
fn inconsistent_channel_counts_are_named() {
    let cases: [(&str, Edit); 6] = [
        // 48 channels do not split into 32 groups.
        ("block_out_channels", |c| {
            c["block_out_channels"] = json!([32, 48])
        }),
        // 64 channels do not split into 6 heads.
        ("attention_head_dim", |c| c["attention_head_dim"] = json!(6)),
        ("attention_head_dim", |c| {
            c["attention_head_dim"] = json!([8, 8, 8])
        }),
        ("up_block_types", |c| {
            c["up_block_types"] = json!(["UpBlock2D"])
        }),
        ("layers_per_block", |c| {
            c["layers_per_block"] = json!([2, 2, 2])
        }),
        ("norm_num_groups", |c| c["norm_num_groups"] = json!(0)),
    ];
    for (expected, edit) in cases {
        assert_eq!(config_error_field(parse_edited(edit)), expected);
    }
}

#[test]
fn architectures_we_do_not_build_are_refused_by_field() {
    let cases: [(&str, Value); 5] = [
        ("addition_embed_type", json!("text_time")),
        ("class_embed_type", json!("timestep")),
        ("resnet_time_scale_shift", json!("scale_shift")),
        ("num_attention_heads", json!(8)),
        ("act_fn", json!("gelu")),
    ];
    for (key, value) in cases {
        let field = config_error_field(parse_edited(|c| {
            c.insert(key.to_string(), value.clone());
        }));
        assert_eq!(field, key);
    }
    // Their "off" values are fine (the committed configs spell them all out).
    parse_edited(|c| {
        c.insert("addition_embed_type".into(), Value::Null);
        c.insert("dual_cross_attention".into(), json!(false));
    })
    .unwrap();
}

#[test]
fn builtin_sd15_config_has_sd15_shapes() {
    let config = UNetConfig::sd15(4).unwrap();
    assert_eq!(config.block_out_channels, [320, 640, 1280, 1280]);
    assert_eq!(config.spatial_multiple(), 8);
    assert_eq!(config.time_embed_dim(), 1280);
    // The quirk: 8 heads everywhere, so head widths 40, 80, 160.
    assert_eq!(config.attention_head_dim.get(0), 8);
    assert_eq!(config.cross_attention_dim.get(3), 768);
    assert_eq!(UNetConfig::sd15(9).unwrap().in_channels, 9);
}

fn tiny_store() -> WeightStore {
    WeightStore::open(pipeline("tiny-sd")).unwrap()
}

#[test]
fn a_config_asking_for_absent_weights_names_the_tensor() {
    let config = parse_edited(|c| c["layers_per_block"] = json!(3)).unwrap();
    match UNet2DConditionModel::from_store(&CpuBackend::new(), config, &tiny_store()) {
        Err(Error::MissingTensor { name, .. }) => {
            assert!(name.starts_with("down_blocks.0.resnets.2."), "{name}")
        }
        other => panic!("expected a missing tensor, got {other:?}"),
    }
}

#[test]
fn a_config_disagreeing_with_the_weights_names_the_tensor_and_shapes() {
    let config = parse_edited(|c| c["cross_attention_dim"] = json!(48)).unwrap();
    match UNet2DConditionModel::from_store(&CpuBackend::new(), config, &tiny_store()) {
        Err(Error::TensorShape {
            name,
            expected,
            found,
            ..
        }) => {
            assert_eq!(
                name,
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
            );
            assert_eq!((expected, found), (vec![64, 48], vec![64, 32]));
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

fn zeros(shape: &[usize]) -> CpuTensor {
    CpuBackend::new()
        .upload(&HostTensor::zeros(shape.to_vec()))
        .unwrap()
}

fn invalid_argument_name(result: sd_core::Result<CpuTensor>) -> String {
    match result {
        Err(Error::InvalidArgument { name, reason }) => {
            println!("{name}: {reason}");
            name
        }
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn empty_latents_and_other_bad_inputs_are_refused() {
    // Odd latent sides are fine (diffusers' upsample_size path; goldens in goldens.rs), empty ones not.
    let dir = pipeline("tiny-sd-alt");
    let store = WeightStore::open(&dir).unwrap();
    let config = UNetConfig::from_file(dir.join("unet/config.json")).unwrap();
    let unet = UNet2DConditionModel::from_store(&CpuBackend::new(), config, &store).unwrap();
    assert_eq!(unet.spatial_multiple(), 1);
    let context = zeros(&[1, 77, 24]);
    for shape in [[0, 4, 16, 16], [1, 4, 0, 16], [1, 4, 16, 0]] {
        let result = unet.predict_noise(&CpuBackend::new(), &zeros(&shape), 10.0, &context);
        assert_eq!(invalid_argument_name(result), "latents");
    }
    let result = unet.predict_noise(&CpuBackend::new(), &zeros(&[1, 9, 16, 16]), 10.0, &context);
    assert_eq!(invalid_argument_name(result), "latents");
    let result = unet.predict_noise(&CpuBackend::new(), &zeros(&[1, 4, 16]), 10.0, &context);
    assert_eq!(invalid_argument_name(result), "latents");
    let result = unet.predict_noise(
        &CpuBackend::new(),
        &zeros(&[1, 4, 16, 16]),
        f64::NAN,
        &context,
    );
    assert_eq!(invalid_argument_name(result), "timestep");
    for context in [zeros(&[1, 77, 32]), zeros(&[2, 77, 24]), zeros(&[77, 24])] {
        let result =
            unet.predict_noise(&CpuBackend::new(), &zeros(&[1, 4, 16, 16]), 10.0, &context);
        assert_eq!(invalid_argument_name(result), "context");
    }
}
