//! Loading the text encoder: config.json checks and weights that do not fit the config.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use std::path::{Path, PathBuf};

use sd_clip::{ClipTextConfig, ClipTextTransformer};
use sd_core::Error;
use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;

fn tiny_sd() -> PathBuf {
    sd_testkit::pipeline("tiny-sd")
}

fn scratch_config(name: &str, json: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    path
}

fn tiny_config() -> ClipTextConfig {
    ClipTextConfig::from_file(tiny_sd().join("text_encoder/config.json")).unwrap()
}

fn load(config: ClipTextConfig) -> sd_core::Result<ClipTextTransformer<CpuBackend>> {
    let store = WeightStore::open(tiny_sd()).unwrap();
    ClipTextTransformer::load(&CpuBackend::new(), &store.text_encoder().unwrap(), config)
}

#[test]
fn fixture_config_reads_every_shape() {
    let config = tiny_config();
    assert_eq!(
        (
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.intermediate_size,
            config.hidden_act.as_str(),
            config.max_position_embeddings,
        ),
        (32, 5, 4, 37, "quick_gelu", 77)
    );
}

#[test]
fn unknown_activation_is_a_config_error_naming_the_field() {
    let path = scratch_config("relu_config", r#"{"hidden_act": "relu"}"#);
    match ClipTextConfig::from_file(&path) {
        Err(Error::Config { path: p, field, .. }) => {
            assert_eq!(p, path);
            assert_eq!(field, "hidden_act");
        }
        other => panic!("expected Config error, got {other:?}"),
    }
}

#[test]
fn heads_that_do_not_divide_the_width_are_a_config_error() {
    let path = scratch_config(
        "bad_heads",
        r#"{"hidden_size": 30, "num_attention_heads": 4}"#,
    );
    assert!(matches!(
        ClipTextConfig::from_file(&path),
        Err(Error::Config { field, .. }) if field == "num_attention_heads"
    ));
}

#[test]
fn malformed_config_json_is_a_config_error() {
    let path = scratch_config("bad_json", r#"{"hidden_size": "wide"}"#);
    assert!(matches!(
        ClipTextConfig::from_file(&path),
        Err(Error::Config { .. })
    ));
}

#[test]
fn more_layers_than_the_weights_have_is_a_missing_tensor() {
    let config = ClipTextConfig {
        num_hidden_layers: 6,
        ..tiny_config()
    };
    match load(config) {
        Err(Error::MissingTensor { name, .. }) => {
            assert!(name.contains("encoder.layers.5."), "{name}")
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

#[test]
fn a_width_the_weights_do_not_have_is_a_shape_error_with_both_shapes() {
    let config = ClipTextConfig {
        hidden_size: 64,
        ..tiny_config()
    };
    match load(config) {
        Err(Error::TensorShape {
            name,
            expected,
            found,
            ..
        }) => {
            assert!(name.contains("token_embedding"), "{name}");
            assert_eq!(expected, vec![49408, 64]);
            assert_eq!(found, vec![49408, 32]);
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
}

#[test]
fn ids_past_the_vocabulary_or_positions_are_errors() {
    let model = load(tiny_config()).unwrap();
    let b = CpuBackend::new();
    assert!(model.forward(&b, &[49406, 60000, 49407], 1, 1).is_err());
    assert!(matches!(
        model.forward(&b, &[49407; 78], 1, 1),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        model.forward(&b, &[49407; 5], 2, 1),
        Err(Error::InvalidArgument { .. })
    ));
}
