//! A1111's sampler names against k-diffusion driven as A1111 drives it: the runs of
//! `fixtures/goldens/a1111_samplers.json` and `a1111_sde.json` (written by
//! `tools/fixturegen/a1111_samplers.py` and `a1111_sde.py`; the SDE samplers with torchsde's
//! Brownian-tree noise).
//! tiny-sd runs through the `sd` command line (images within one level) and through the library
//! (final latents too); the inpainting UNet, which is no whole model folder, through the library.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sd_core::weights::SafetensorsFile;
use serde_json::Value;
use stable_diffusion::png::read_rgb;
use stable_diffusion::{GenerationRequest, LoadOptions, PromptMode, RngSource, StableDiffusion};
use support::{
    PIXEL_TOLERANCE, assert_matches_goldens, fixtures, goldens, load_tiny, load_tiny_inpainting,
    max_level_difference,
};

/// The golden manifests, each with the file (per model) holding its runs' final latents.
const MANIFESTS: &[(&str, &str)] = &[
    ("a1111_samplers.json", "a1111_samplers.safetensors"),
    ("a1111_sde.json", "a1111_sde.safetensors"),
];

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(goldens().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The golden runs of `model` in every manifest: (key, spec, latents file).
fn runs(model: &str) -> Vec<(String, Value, &'static str)> {
    let mut all = Vec::new();
    for &(name, latents) in MANIFESTS {
        if let Some(runs) = manifest(name)["runs"][model].as_object() {
            all.extend(runs.iter().map(|(k, v)| (k.clone(), v.clone(), latents)));
        }
    }
    assert!(!all.is_empty(), "no runs for {model}");
    all
}

fn seeds(spec: &Value) -> Vec<u64> {
    spec["seeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

fn request(spec: &Value) -> GenerationRequest {
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
    if spec["rng"] == "nv" {
        request = request.rng(RngSource::Nv);
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
    for (key, spec, file) in runs(model) {
        let latents = SafetensorsFile::open(goldens().join(model).join(file)).unwrap();
        let generation = sd.generate(&request(&spec)).unwrap();
        let expected = latents.get(&format!("{key}/latents")).unwrap();
        assert_matches_goldens(
            &format!("{model} {key}"),
            &generation,
            &expected,
            &pngs(model, &spec),
        );
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
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("a1111-samplers")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `sd generate` as the goldens ran: their prompts, 10 steps, CFG 7.5, read literally.
fn golden_run_args<'a>(seed: &'a str, scheduler: &'a str, out: &'a Path) -> Vec<&'a str> {
    vec![
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
        seed,
        "--scheduler",
        scheduler,
        "--plain-prompt",
        "--quiet",
        "--output",
        out.to_str().unwrap(),
    ]
}

/// Every tiny-sd run through `sd generate`: the sampler by name, `--schedule-type` when the run
/// has one, seeds `--seed S --batch N` (image i gets S + i, its own generator).
#[test]
fn cli_images_match_k_diffusion_within_one_level() {
    let dir = scratch("cli");
    for (key, spec, _) in runs("tiny-sd") {
        let seeds = seeds(&spec);
        let out = dir.join(format!("{}.png", key.replace(['/', ' ', '+'], "_")));
        let (first, batch) = (seeds[0].to_string(), seeds.len().to_string());
        let mut args = golden_run_args(&first, spec["sampler"].as_str().unwrap(), &out);
        args.extend(["--batch", &batch]);
        if let Some(schedule) = spec["schedule_type"].as_str() {
            args.extend(["--schedule-type", schedule]);
        }
        args.extend(["--rng", spec["rng"].as_str().unwrap()]);
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
            assert!(
                worst <= PIXEL_TOLERANCE,
                "{key} image {i}: {worst} levels off"
            );
        }
    }
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `--rng nv`: the initial noise is A1111's NV stream of the seed, so the image is diffusers'
/// image fed that noise as its latents (tools/fixturegen/philox.py); the PNG says `RNG: NV`.
#[test]
fn rng_nv_gives_diffusers_image_from_the_nv_noise() {
    let out = scratch("rng").join("nv.png");
    let mut args = golden_run_args("1", "PNDM", &out);
    args.extend(["--rng", "nv"]);
    let run = sd_command(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let golden = read_rgb(goldens().join("tiny-sd").join("rng_nv_pndm_seed1.png")).unwrap();
    let worst = max_level_difference(&read_rgb(&out).unwrap(), &golden);
    assert!(worst <= PIXEL_TOLERANCE, "{worst} levels off");
    let info = stdout(&sd_command(&["info", out.to_str().unwrap()]));
    assert!(info.contains(", RNG: NV, "), "{info}");
    assert!(
        info.contains("Sampler: PLMS, "),
        "PNDM is A1111's PLMS: {info}"
    );
}

/// A combined old name is written as A1111 writes it: the sampler, then `Schedule type`; an
/// empty negative prompt leaves its line out.
#[test]
fn infotext_names_the_sampler_and_schedule_type_as_a1111() {
    let dir = scratch("infotext");
    for (scheduler, schedule_type, expected) in [
        (
            "DPM2 a Karras",
            None,
            "Sampler: DPM2 a, Schedule type: Karras, ",
        ),
        (
            "DPM++ 2M",
            None,
            "Sampler: DPM++ 2M, Schedule type: Karras, ",
        ),
        (
            "Euler a",
            None,
            "Sampler: Euler a, Schedule type: Automatic, ",
        ),
        (
            "k_euler",
            Some("sgm_uniform"),
            "Sampler: Euler, Schedule type: SGM Uniform, ",
        ),
        (
            "DPM++ 2M SDE Karras",
            None,
            "Sampler: DPM++ 2M SDE, Schedule type: Karras, ",
        ),
        (
            "DPM++ SDE",
            None,
            "Sampler: DPM++ SDE, Schedule type: Karras, ",
        ),
    ] {
        let out = dir.join("out.png");
        let mut args = vec![
            "generate",
            "--prompt",
            "a fox",
            "--steps",
            "2",
            "--seed",
            "3",
            "--scheduler",
            scheduler,
            "--quiet",
            "--output",
            out.to_str().unwrap(),
        ];
        if let Some(kind) = schedule_type {
            args.extend(["--schedule-type", kind]);
        }
        let run = sd_command(&args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let info = stdout(&sd_command(&["info", out.to_str().unwrap()]));
        assert!(info.contains(expected), "{scheduler}: {info}");
        assert!(info.contains("RNG: CPU"), "{info}");
        assert!(!info.contains("Negative prompt"), "{info}");
    }
}

#[test]
fn scheduler_help_lists_both_vocabularies() {
    let run = sd_command(&["generate", "--scheduler", "help"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = stdout(&run);
    for needle in [
        "A1111 samplers",
        "DPM2 a [k_dpm_2_a, Automatic = karras]",
        "DPM++ 2M SDE Heun [k_dpmpp_2m_sde_heun, Automatic = exponential]",
        "SGM Uniform [sgm_uniform, SGMUniform]",
        "diffusers schedulers",
        "DPMSolverMultistepScheduler",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}

#[test]
fn bad_schedule_type_and_rng_are_named() {
    let run = sd_command(&["generate", "--prompt", "x", "--schedule-type", "sideways"]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("sideways") && err.contains("SGM Uniform"),
        "{err}"
    );
    let run = sd_command(&["generate", "--prompt", "x", "--rng", "gpu"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--rng"));
    let run = sd_command(&[
        "generate",
        "--prompt",
        "x",
        "--scheduler",
        "DDIM",
        "--schedule-type",
        "Karras",
        "--steps",
        "1",
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("DDIM"));
}
