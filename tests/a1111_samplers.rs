//! A1111's sampler names against k-diffusion driven as A1111 drives it: the runs of
//! `fixtures/goldens/a1111_samplers.json` (written by `tools/fixturegen/a1111_samplers.py`).
//! tiny-sd runs through the `sd` command line (images within one level) and through the library
//! (final latents too); the inpainting UNet, which is no whole model folder, through the library.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sd_core::weights::SafetensorsFile;
use serde_json::Value;
use stable_diffusion::png::read_rgb;
use stable_diffusion::{GenerationRequest, LoadOptions, PromptMode, StableDiffusion};
use support::{
    PIXEL_TOLERANCE, assert_matches_goldens, fixtures, goldens, load_tiny, load_tiny_inpainting,
    max_level_difference,
};

fn manifest() -> Value {
    let text = std::fs::read_to_string(goldens().join("a1111_samplers.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The golden runs of `model`: (key, spec).
fn runs(model: &str) -> Vec<(String, Value)> {
    let manifest = manifest();
    let runs = manifest["runs"][model].as_object().unwrap();
    assert!(!runs.is_empty(), "no runs for {model}");
    runs.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn seeds(spec: &Value) -> Vec<u64> {
    spec["seeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

fn request(manifest: &Value, spec: &Value) -> GenerationRequest {
    let _ = manifest;
    let mut request = GenerationRequest::new("a photograph of an astronaut riding a horse")
        .negative_prompt("blurry, low quality")
        .steps(10)
        .guidance_scale(7.5)
        .size(64, 64)
        .scheduler(spec["sampler"].as_str().unwrap())
        .prompt_mode(PromptMode::Plain)
        .seeds(seeds(spec));
    if let Some(schedule) = spec["schedule_type"].as_str() {
        request = request.schedule_type(schedule);
    }
    request
}

fn pngs(model: &str, spec: &Value) -> Vec<PathBuf> {
    spec["pngs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| goldens().join(model).join(p.as_str().unwrap()))
        .collect()
}

fn check_library(sd: &StableDiffusion<sd_core::cpu::CpuBackend>, model: &str) {
    let manifest = manifest();
    let latents =
        SafetensorsFile::open(goldens().join(model).join("a1111_samplers.safetensors")).unwrap();
    for (key, spec) in runs(model) {
        let generation = sd.generate(&request(&manifest, &spec)).unwrap();
        let expected = latents.get(&format!("{key}/latents")).unwrap();
        assert_matches_goldens(&format!("{model} {key}"), &generation, &expected, &pngs(model, &spec));
    }
}

#[test]
fn tiny_sd_a1111_samplers_match_k_diffusion() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    check_library(&sd, "tiny-sd");
}

#[test]
fn inpainting_unet_a1111_samplers_match_k_diffusion() {
    check_library(&load_tiny_inpainting(), "tiny-sd-inpaint");
}

fn sd_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sd"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("a1111-samplers").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every tiny-sd run through `sd generate`: the sampler by name, `--schedule-type` when the run
/// has one, seeds `--seed S --batch N` (image i gets S + i, its own generator).
#[test]
fn cli_images_match_k_diffusion_within_one_level() {
    let dir = scratch("cli");
    for (key, spec) in runs("tiny-sd") {
        let seeds = seeds(&spec);
        let out = dir.join(format!("{}.png", key.replace(['/', ' ', '+'], "_")));
        let (first, batch) = (seeds[0].to_string(), seeds.len().to_string());
        let mut args = vec![
            "generate",
            "--prompt",
            "a photograph of an astronaut riding a horse",
            "--negative-prompt",
            "blurry, low quality",
            "--steps",
            "10",
            "--cfg",
            "7.5",
            "--seed",
            &first,
            "--batch",
            &batch,
            "--scheduler",
            spec["sampler"].as_str().unwrap(),
            "--plain-prompt",
            "--quiet",
            "--output",
            out.to_str().unwrap(),
        ];
        if let Some(schedule) = spec["schedule_type"].as_str() {
            args.extend(["--schedule-type", schedule]);
        }
        let run = sd_command(&args);
        assert!(
            run.status.success(),
            "{key}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        for (i, golden) in pngs("tiny-sd", &spec).iter().enumerate() {
            let written = if seeds.len() == 1 {
                out.clone()
            } else {
                let stem = out.file_stem().unwrap().to_string_lossy();
                out.with_file_name(format!("{stem}-{}.png", i + 1))
            };
            let ours = read_rgb(&written).unwrap();
            let worst = max_level_difference(&ours, &read_rgb(golden).unwrap());
            println!("{key} image {i}: at most {worst} levels off");
            assert!(worst <= PIXEL_TOLERANCE, "{key} image {i}: {worst} levels off");
        }
    }
}
