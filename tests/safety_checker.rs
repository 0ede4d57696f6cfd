//! The safety checker in generation, in the library and in `sd generate`: a copy of tiny-sd
//! with the tiny checker of `fixtures/tiny-safety` against diffusers' `StableDiffusionPipeline`
//! with the same folder (goldens by `tools/fixturegen/safety.py`).
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sd_core::pipeline::RgbImage;
use sd_testkit::AUTO_MEANS_F32;
use serde_json::Value;
use stable_diffusion::png::read_rgb;
use stable_diffusion::{GenerationRequest, LoadOptions, PromptMode, SafetyCheckerChoice};
use support::{PIXEL_TOLERANCE, fixtures, goldens, load_tiny, max_level_difference};

/// What diffusers flagged in the golden batch (seeds 20–23).
const GOLDEN_FLAGS: [bool; 4] = [false, true, true, false];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-safety-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// tiny-sd with `safety_checker/` and `feature_extractor/` listed in its `model_index.json`,
/// as the golden pipeline was saved.
fn tiny_sd_with_checker(name: &str) -> PathBuf {
    let dir = scratch(name).join("tiny-sd-safe");
    copy_dir(&fixtures().join("tiny-sd"), &dir);
    for part in ["safety_checker", "feature_extractor"] {
        copy_dir(&fixtures().join("tiny-safety").join(part), &dir.join(part));
    }
    let index_path = dir.join("model_index.json");
    let mut index: Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["safety_checker"] =
        serde_json::json!(["stable_diffusion", "StableDiffusionSafetyChecker"]);
    index["feature_extractor"] = serde_json::json!(["transformers", "CLIPImageProcessor"]);
    std::fs::write(&index_path, index.to_string()).unwrap();
    dir
}

fn golden_call() -> Value {
    let text = std::fs::read_to_string(goldens().join("safety.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["call"].clone()
}

fn golden_request() -> GenerationRequest {
    let call = golden_call();
    let seeds = call["seeds"].as_array().unwrap();
    let mut request = GenerationRequest::new(call["prompt"].as_str().unwrap())
        .negative_prompt(call["negative_prompt"].as_str().unwrap())
        .steps(call["num_inference_steps"].as_u64().unwrap() as usize)
        .guidance_scale(call["guidance_scale"].as_f64().unwrap() as f32)
        .prompt_mode(PromptMode::Plain)
        .scheduler("PNDM")
        .seeds(seeds.iter().map(|s| s.as_u64().unwrap()).collect());
    request.width = Some(call["width"].as_u64().unwrap() as usize);
    request.height = Some(call["height"].as_u64().unwrap() as usize);
    request
}

fn pipeline_golden(i: usize) -> RgbImage {
    read_rgb(goldens().join(format!("safety/pipeline_{i}.png"))).unwrap()
}

fn is_black(image: &RgbImage) -> bool {
    image.pixels().iter().all(|&p| p == 0)
}

#[test]
fn a_folder_that_ships_a_checker_runs_it_and_matches_diffusers() {
    let dir = tiny_sd_with_checker("folder");
    let sd = load_tiny(&dir, LoadOptions::default());
    assert!(sd.has_safety_checker());
    let generation = sd.generate(&golden_request()).unwrap();
    assert_eq!(generation.safety_flags.as_deref(), Some(&GOLDEN_FLAGS[..]));
    for (i, image) in generation.images.iter().enumerate() {
        let golden = pipeline_golden(i);
        if GOLDEN_FLAGS[i] {
            assert!(
                is_black(image) && is_black(&golden),
                "image {i} should be black"
            );
        } else {
            let worst = max_level_difference(image, &golden);
            assert!(
                worst <= PIXEL_TOLERANCE,
                "image {i}: pixels differ by {worst}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn the_checker_can_be_turned_off() {
    let dir = tiny_sd_with_checker("off");
    let options = LoadOptions::default().safety_checker(SafetyCheckerChoice::Off);
    let sd = load_tiny(&dir, options);
    assert!(!sd.has_safety_checker());
    let generation = sd.generate(&golden_request()).unwrap();
    assert_eq!(generation.safety_flags, None);
    assert!(generation.images.iter().all(|image| !is_black(image)));
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn a_single_file_model_takes_a_named_checker_and_low_memory_loads_it_on_demand() {
    let options = LoadOptions::default()
        .config_dir(fixtures().join("tiny-sd"))
        .low_memory(true)
        .safety_checker(SafetyCheckerChoice::File(
            fixtures().join("tiny-safety/safety_checker"),
        ));
    let sd = load_tiny(&fixtures().join("ldm/tiny-sd.safetensors"), options);
    let generation = sd.generate(&golden_request()).unwrap();
    assert_eq!(generation.safety_flags.as_deref(), Some(&GOLDEN_FLAGS[..]));
}

#[test]
fn a_missing_checker_is_an_error_naming_it() {
    let missing = fixtures().join("no-such-checker");
    let options = LoadOptions::default().safety_checker(SafetyCheckerChoice::File(missing));
    let err = stable_diffusion::StableDiffusion::load(fixtures().join("tiny-sd"), options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-checker"), "{err}");
}

fn sd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sd"))
        .args(args)
        .env(AUTO_MEANS_F32.0, AUTO_MEANS_F32.1)
        .output()
        .unwrap()
}

#[test]
fn sd_generate_warns_names_flagged_images_and_records_the_verdict() {
    let dir = tiny_sd_with_checker("cli");
    let out = dir.parent().unwrap().join("safe.png");
    let call = golden_call();
    let base = [
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        call["prompt"].as_str().unwrap(),
        "--negative-prompt",
        call["negative_prompt"].as_str().unwrap(),
        "--steps",
        "10",
        "--scheduler",
        "PNDM",
        "--plain-prompt",
        "--seed",
        "20",
        "--batch",
        "4",
        "--quiet",
        "--output",
        out.to_str().unwrap(),
    ];
    let run = sd(&base);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(warnings[0].contains("image 2 (seed 21)") && warnings[0].contains("safe-2.png"));
    assert!(warnings[1].contains("image 3 (seed 22)") && warnings[1].contains("safe-3.png"));
    for (i, flagged) in GOLDEN_FLAGS.iter().enumerate() {
        let file = out.with_file_name(format!("safe-{}.png", i + 1));
        let info = sd(&["info", file.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&info.stdout).into_owned();
        let verdict = if *flagged {
            "Safety checker: flagged"
        } else {
            "Safety checker: passed"
        };
        assert!(text.contains(verdict), "image {}: {text}", i + 1);
        assert_eq!(
            is_black(&read_rgb(&file).unwrap()),
            *flagged,
            "image {}",
            i + 1
        );
    }

    let mut off = base.to_vec();
    off.push("--no-safety-checker");
    let run = sd(&off);
    assert!(run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).is_empty());
    let info = sd(&["info", out.with_file_name("safe-2.png").to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&info.stdout).contains("Safety checker"));
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}
