//! LoRA files against their references: the runs of `fixtures/goldens/lora.json` (written by
//! `tools/fixturegen/lora.py`) on both tiny pipelines. Each run loads its LoRA files with their
//! text-encoder and UNet multipliers and must give the reference's final latents and image.
//! The reference is diffusers (`load_lora_weights`) where it loads the format as A1111 does, else
//! a short torch merge by the formats' published formulas (`"reference"` in the JSON says which).
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use sd_core::weights::SafetensorsFile;
use serde_json::Value;
use stable_diffusion::lora::LoraSpec;
use stable_diffusion::{GenerationRequest, LoadOptions, PromptMode, StableDiffusion};
use support::{assert_matches_goldens, fixtures, goldens};

fn runs() -> Value {
    let text = std::fs::read_to_string(goldens().join("lora.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["runs"].clone()
}

fn check(model: &str, case: &str) {
    let spec = &runs()[model][case];
    assert!(spec.is_object(), "no run {model} {case} in lora.json");
    let mut options = LoadOptions::default();
    for lora in spec["loras"].as_array().unwrap() {
        let path = fixtures().join(lora["file"].as_str().unwrap());
        let weight = |key: &str| lora[key].as_f64().unwrap() as f32;
        options =
            options.lora(LoraSpec::new(path, weight("unet")).text_encoder_multiplier(weight("te")));
    }
    let sd = StableDiffusion::load(fixtures().join(model), options).unwrap();
    for file in &sd.lora_report().files {
        assert!(
            file.skipped.is_empty(),
            "{}: skipped {:?}",
            file.path.display(),
            file.skipped
        );
        assert!(file.applied > 0);
    }
    let request = GenerationRequest::new(spec["prompt"].as_str().unwrap())
        .negative_prompt(spec["negative_prompt"].as_str().unwrap_or(""))
        .steps(spec["num_inference_steps"].as_u64().unwrap() as usize)
        .guidance_scale(spec["guidance_scale"].as_f64().unwrap() as f32)
        .seed(spec["seed"].as_u64().unwrap())
        .scheduler(spec["sampler"].as_str().unwrap())
        .prompt_mode(PromptMode::Plain);
    let generation = sd.generate(&request).unwrap();
    let latents = SafetensorsFile::open(
        goldens()
            .join(model)
            .join(spec["latents_file"].as_str().unwrap()),
    )
    .unwrap()
    .get(spec["latents_key"].as_str().unwrap())
    .unwrap();
    let png = goldens().join(model).join(spec["png"].as_str().unwrap());
    let what = format!(
        "{model} {case} ({})",
        spec["reference"].as_str().unwrap_or("?")
    );
    assert_matches_goldens(&what, &generation, &latents, &[png]);
}

/// Every case the JSON lists for both models runs here: a new case cannot be left untested.
#[test]
fn every_lora_case_matches_its_reference() {
    let runs = runs();
    let mut checked = 0;
    for model in ["tiny-sd", "tiny-sd-alt"] {
        for case in runs[model].as_object().unwrap().keys() {
            check(model, case);
            checked += 1;
        }
    }
    assert!(checked >= 2 * 9, "only {checked} LoRA runs");
}
