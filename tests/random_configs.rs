//! Random values in every field of the UNet, VAE, CLIP and scheduler configs: loading and the
//! first denoising step give a typed error or finite latents — never a panic, an abort or NaN.
//!
//! Each case sets one field of tiny-sd's configs (or a scheduler field the file leaves out) to a
//! JSON value of random type and magnitude, loads the model from the unchanged tiny-sd weights
//! and runs one step at 16×16. Kept to a few dozen cases per component so CI stays fast
//! (`PROPTEST_CASES` raises it).
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;
use serde_json::{Value, json};
use stable_diffusion::configs::ModelConfigs;
use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
use support::fixtures;

/// The config files, and scheduler fields tiny-sd's file leaves out (they must be checked too).
const CONFIGS: [&str; 4] = [
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "scheduler/scheduler_config.json",
];
const EXTRA_SCHEDULER_FIELDS: [&str; 12] = [
    "clip_sample_range",
    "sigma_min",
    "sigma_max",
    "timestep_spacing",
    "prediction_type",
    "trained_betas",
    "solver_order",
    "timestep_scaling",
    "original_inference_steps",
    "lambda_min_clipped",
    "use_karras_sigmas",
    "final_sigmas_type",
];
const SAMPLERS: [&str; 5] = ["PNDM", "DDIM", "Euler a", "DPM++ 2M Karras", "LCM"];

/// A copy of tiny-sd's config files (and tokenizer) whose configs a case edits.
fn config_folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-random-configs-{}", std::process::id()));
    let source = fixtures().join("tiny-sd");
    for file in CONFIGS.iter().chain(&[
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "model_index.json",
    ]) {
        let target = dir.join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(source.join(file), target).unwrap();
    }
    if source.join("tokenizer/tokenizer_config.json").is_file() {
        std::fs::copy(
            source.join("tokenizer/tokenizer_config.json"),
            dir.join("tokenizer/tokenizer_config.json"),
        )
        .unwrap();
    }
    dir
}

/// JSON of random type and magnitude: the values a hand-edited or hostile config holds.
fn json_value() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        (-4i64..70).prop_map(|n| json!(n)),
        prop::sample::select(vec![
            0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, -1e-12, 1e12, -1e12, 1e300, -1e300, 3.4e38, 1e39,
        ])
        .prop_map(|x| json!(x)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |x| x.is_finite())
            .prop_map(|x| json!(x)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number.clone(),
        prop::sample::select(vec!["", "silu", "gelu", "linear", "x", "DDIMScheduler"])
            .prop_map(|s| json!(s)),
    ];
    prop_oneof![
        3 => leaf,
        1 => prop::collection::vec(number, 0..5).prop_map(Value::Array),
        1 => Just(json!({})),
    ]
}

/// Load tiny-sd's weights with the configs in `dir` and run one step of `sampler` at 16×16.
fn load_and_step(store: &Arc<WeightStore>, dir: &Path, sampler: &str) -> sd_core::Result<()> {
    let configs = ModelConfigs::from_folder(dir)?;
    let model = StableDiffusion::from_store(
        CpuBackend::new(),
        Arc::clone(store),
        configs,
        &LoadOptions::default(),
    )?;
    let request = GenerationRequest::new("a fox")
        .size(16, 16)
        .steps(1)
        .seed(0)
        .scheduler(sampler);
    let generation = model.generate(&request)?;
    assert!(
        generation.latents.iter().all(|v| v.is_finite()),
        "a generation returned non-finite latents instead of an error"
    );
    Ok(())
}

#[test]
fn random_config_values_give_a_typed_error_or_a_finite_step() {
    let dir = config_folder();
    let store = Arc::new(WeightStore::open(fixtures().join("tiny-sd")).unwrap());
    let originals: Vec<Value> = CONFIGS
        .iter()
        .map(|file| serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap())
        .collect();
    // The unchanged configs run: a failure below is the value's doing.
    load_and_step(&store, &dir, "PNDM").unwrap();

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(96);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let case = (
        0..CONFIGS.len(),
        any::<prop::sample::Index>(),
        json_value(),
        0..SAMPLERS.len(),
    );
    proptest!(config, |((component, field, value, sampler) in case)| {
        let mut edited = originals[component].clone();
        let object = edited.as_object_mut().unwrap();
        let mut fields: Vec<String> = object.keys().cloned().collect();
        if CONFIGS[component].starts_with("scheduler") {
            fields.extend(EXTRA_SCHEDULER_FIELDS.iter().map(|f| f.to_string()));
        }
        let name = field.get(&fields).clone();
        object.insert(name.clone(), value.clone());
        std::fs::write(dir.join(CONFIGS[component]), serde_json::to_vec(&edited).unwrap()).unwrap();
        // A panic inside fails the case (with the field and value shown); an abort ends the run.
        let outcome = load_and_step(&store, &dir, SAMPLERS[sampler]);
        std::fs::write(
            dir.join(CONFIGS[component]),
            serde_json::to_vec(&originals[component]).unwrap(),
        )
        .unwrap();
        if let Err(error) = outcome {
            // Typed, and one that says something (not an empty reason).
            prop_assert!(!error.to_string().is_empty(), "{name} = {value}");
        }
    });
}
