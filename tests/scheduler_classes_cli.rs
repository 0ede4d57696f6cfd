//! The diffusers classes added for issue 16 through `sd generate --scheduler CLASS
//! --scheduler-config KEY=VALUE`: each image is diffusers' image (tools/fixturegen/
//! scheduler_classes.py, goldens/scheduler_classes_images.json; DPMSolverSDEScheduler:
//! tools/fixturegen/dpmsolver_sde.py, goldens/dpmsolver_sde_images.json) within one level.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use serde_json::Value;
use stable_diffusion::png::read_rgb;
use support::cli::{assert_fails_naming, golden_run, path_arg, scratch, sd, stderr};
use support::{goldens, max_level_difference};

/// The prompts of the generation goldens (tools/fixturegen/generations.py).
const PROMPT: &str = "a photograph of an astronaut riding a horse";
const NEGATIVE: &str = "blurry, low quality";

/// A JSON value as `--scheduler-config` takes it: strings bare, the rest as JSON.
fn config_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[test]
fn every_new_class_gives_the_diffusers_image_through_the_cli() {
    let runs = check_images("scheduler_classes_images");
    assert!(runs >= 5, "one run per new class at least");
}

/// Without `noise_sampler_seed` the tree is seeded with the image's seed (diffusers' run with
/// that seed set); with it, with the config's.
#[test]
fn dpmsolver_sde_gives_the_diffusers_image_through_the_cli() {
    let runs = check_images("dpmsolver_sde_images");
    assert!(runs >= 2, "a run without and one with noise_sampler_seed");
}

/// Every run of `goldens/<stem>.json` through `sd generate`, within one level; returns how many.
fn check_images(stem: &str) -> usize {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(goldens().join(format!("{stem}.json"))).unwrap(),
    )
    .unwrap();
    let dir = scratch(stem);
    let runs = manifest["runs"].as_object().unwrap();
    for (key, run) in runs {
        let out = dir.join(format!("{key}.png"));
        let scheduler = run["scheduler"].as_str().unwrap();
        let overrides: Vec<String> = run["scheduler_config"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", config_value(v)))
            .collect();
        let eta = run.get("eta").map(|v| v.to_string());
        let mut args = golden_run(PROMPT, NEGATIVE, scheduler);
        for o in &overrides {
            args.extend(["--scheduler-config", o.as_str()]);
        }
        if let Some(eta) = &eta {
            args.extend(["--eta", eta.as_str()]);
        }
        args.extend(["--quiet", "--output", path_arg(&out)]);
        let result = sd(&args);
        assert!(result.status.success(), "{key}: {}", stderr(&result));
        let ours = read_rgb(&out).unwrap();
        let golden = read_rgb(goldens().join(run["png"].as_str().unwrap())).unwrap();
        let worst = max_level_difference(&ours, &golden);
        println!("{key}: max difference {worst} levels");
        assert!(worst <= 1, "{key}: pixels differ by {worst} levels");
    }
    runs.len()
}

#[test]
fn a_bad_scheduler_config_fails_before_loading_naming_key_and_value() {
    let dir = scratch("scheduler_config_errors");
    let out = dir.join("never.png");
    for (arg, needles) in [
        (
            "use_karas_sigmas=true",
            &["use_karas_sigmas=true", "unknown key"][..],
        ),
        ("solver_order=three", &["solver_order=three"][..]),
        ("solver_order", &["solver_order", "KEY=VALUE"][..]),
    ] {
        let run = sd(&[
            "generate",
            "--prompt",
            "x",
            "--scheduler",
            "DEISMultistepScheduler",
            "--scheduler-config",
            arg,
            "--output",
            path_arg(&out),
        ]);
        assert_fails_naming(&run, needles);
        assert!(!out.exists());
    }
    // Well typed, but not a value the class supports: named when the scheduler is built.
    let run = sd(&[
        "generate",
        "--prompt",
        "x",
        "--steps",
        "2",
        "--scheduler",
        "DPMSolverSinglestepScheduler",
        "--scheduler-config",
        "algorithm_type=dpmsolver+++",
        "--output",
        path_arg(&out),
    ]);
    assert_fails_naming(&run, &["algorithm_type", "dpmsolver+++"]);
}
