//! A1111's sampler names against k-diffusion driven as A1111 drives it: the runs of
//! `fixtures/goldens/a1111_samplers.json` (written by `tools/fixturegen/a1111_samplers.py`), and
//! A1111's own DDIM, PLMS, LCM and its further schedule types: the runs of
//! `fixtures/goldens/a1111_exact.json` (`tools/fixturegen/a1111_exact.py`, A1111's code
//! transcribed); the SDE samplers with torchsde's Brownian-tree noise: the runs of
//! `fixtures/goldens/a1111_sde.json` (`tools/fixturegen/a1111_sde.py`) and DPM++ 3M SDE: the runs
//! of `fixtures/goldens/a1111_sde3m.json` (`tools/fixturegen/a1111_sde3m.py`); DDIM CFG++, DPM
//! fast, DPM adaptive and img2img with A1111's timestep samplers and DPM fast: the runs of
//! `fixtures/goldens/a1111_cfgpp.json` (`tools/fixturegen/a1111_cfgpp.py`). tiny-sd runs through
//! the `sd` command line (images within one level) and through the library (final latents too);
//! the inpainting UNet, which is no whole model folder, through the library.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sd_core::weights::SafetensorsFile;
use sd_testkit::AUTO_MEANS_F32;
use serde_json::Value;
use stable_diffusion::png::read_rgb;
use stable_diffusion::{GenerationRequest, LoadOptions, PromptMode, RngSource, StableDiffusion};
use support::{
    LATENT_TOLERANCE, PIXEL_TOLERANCE, assert_matches_goldens_within, fixtures, goldens, load_tiny,
    load_tiny_inpainting, max_level_difference,
};

/// A golden set: `goldens/<name>.json` and `goldens/<model>/<name>.safetensors`.
const K_DIFFUSION: &str = "a1111_samplers";
const A1111_OWN: &str = "a1111_exact";
const K_DIFFUSION_SDE: &str = "a1111_sde";
const K_DIFFUSION_SDE_3M: &str = "a1111_sde3m";
const A1111_CFGPP: &str = "a1111_cfgpp";

fn manifest(set: &str) -> Value {
    let text = std::fs::read_to_string(goldens().join(format!("{set}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The golden runs of `model` in `set`: (key, spec).
fn runs(set: &str, model: &str) -> Vec<(String, Value)> {
    let manifest = manifest(set);
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
    if let Some((image, strength)) = init_image(spec) {
        request = request.init_image(read_rgb(image).unwrap(), strength);
    }
    request
}

/// An img2img run's init image (next to the golden manifests) and strength.
fn init_image(spec: &Value) -> Option<(PathBuf, f64)> {
    let image = spec.get("init_image")?.as_str().unwrap();
    let path = goldens().join("tiny-sd").join(image);
    Some((path, spec["strength"].as_f64().unwrap()))
}

fn pngs(model: &str, spec: &Value) -> Vec<PathBuf> {
    spec["pngs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| goldens().join(model).join(p.as_str().unwrap()))
        .collect()
}

/// DPM adaptive's latents, relative to their largest magnitude: it makes 54–66 evaluations (the
/// other runs 10), and its step sizes follow an error norm torch sums in f32 and we in f64,
/// which can move a step's end by an ulp. Measured: 2.1e-5 (txt2img), 9.8e-6 (img2img),
/// 5.2e-5 (a batch of two); the images agree within a level. With the AVX2 attention kernels
/// (CPUs without AVX-512), whose f32 roundings differ from the GEMM engine's, the batch of two
/// moved to 1.35e-4 (1.2e-5, 1.5e-5 for the others): the error control amplifies any rounding.
const ADAPTIVE_LATENT_TOLERANCE: f32 = 2e-4;

fn check_library(sd: &StableDiffusion<sd_core::cpu::CpuBackend>, set: &str, model: &str) {
    let latents =
        SafetensorsFile::open(goldens().join(model).join(format!("{set}.safetensors"))).unwrap();
    for (key, spec) in runs(set, model) {
        let generation = sd.generate(&request(&spec)).unwrap();
        let expected = latents.get(&format!("{key}/latents")).unwrap();
        let tolerance = match spec["sampler"].as_str() {
            Some("DPM adaptive") => ADAPTIVE_LATENT_TOLERANCE,
            _ => LATENT_TOLERANCE,
        };
        assert_matches_goldens_within(
            &format!("{model} {key}"),
            &generation,
            &expected,
            &pngs(model, &spec),
            tolerance,
        );
    }
}

#[test]
fn tiny_sd_a1111_samplers_match_k_diffusion() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    check_library(&sd, K_DIFFUSION, "tiny-sd");
}

#[test]
fn tiny_sd_a1111_own_samplers_and_schedule_types_match_a1111() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    check_library(&sd, A1111_OWN, "tiny-sd");
}

#[test]
fn tiny_sd_a1111_sde_samplers_match_k_diffusion() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    check_library(&sd, K_DIFFUSION_SDE, "tiny-sd");
}

#[test]
fn tiny_sd_a1111_3m_sde_matches_k_diffusion() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    check_library(&sd, K_DIFFUSION_SDE_3M, "tiny-sd");
}

/// DDIM CFG++, DPM fast/adaptive and img2img with A1111's timestep samplers (a1111_cfgpp).
#[test]
fn tiny_sd_ddim_cfgpp_dpm_fast_and_timestep_img2img_match_a1111() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    check_library(&sd, A1111_CFGPP, "tiny-sd");
}

/// DPM fast and DPM adaptive evaluate the model as often as k-diffusion did (adaptive: as its
/// error control decided, rejected attempts included), and the progress counts each
/// evaluation once, its last report's total equal to what ran.
#[test]
fn dpm_solver_runs_report_every_evaluation_k_diffusion_made() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    let mut checked = 0;
    for (key, spec) in runs(A1111_CFGPP, "tiny-sd") {
        let Some(expected) = spec.get("evaluation_sigmas").and_then(Value::as_array) else {
            continue;
        };
        let mut reports = Vec::new();
        sd.generate_with_progress(&request(&spec), |progress| {
            reports.push((progress.step, progress.total));
            sd_core::pipeline::Control::Continue
        })
        .unwrap();
        assert_eq!(reports.len(), expected.len(), "{key}: evaluations");
        let steps: Vec<usize> = reports.iter().map(|r| r.0).collect();
        assert_eq!(steps, (1..=expected.len()).collect::<Vec<_>>(), "{key}");
        assert!(reports.iter().all(|(step, total)| step <= total), "{key}");
        assert_eq!(
            reports.last().unwrap().1,
            expected.len(),
            "{key}: final total"
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "the golden set has DPM fast and DPM adaptive runs"
    );
}

#[test]
fn inpainting_unet_a1111_samplers_match_k_diffusion() {
    check_library(&load_tiny_inpainting(), K_DIFFUSION, "tiny-sd-inpaint");
}

fn sd_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sd"))
        .args(args)
        .env(AUTO_MEANS_F32.0, AUTO_MEANS_F32.1)
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

/// Every tiny-sd run of `set` through `sd generate`: the sampler by name, `--schedule-type`
/// when the run has one, seeds `--seed S --batch N` (image i gets S + i, its own generator).
fn check_cli(set: &str) {
    let dir = scratch(set);
    for (key, spec) in runs(set, "tiny-sd") {
        let seeds = seeds(&spec);
        let out = dir.join(format!("{}.png", key.replace(['/', ' ', '+'], "_")));
        let (first, batch) = (seeds[0].to_string(), seeds.len().to_string());
        let mut args = golden_run_args(&first, spec["sampler"].as_str().unwrap(), &out);
        args.extend(["--batch", &batch]);
        if let Some(schedule) = spec["schedule_type"].as_str() {
            args.extend(["--schedule-type", schedule]);
        }
        args.extend(["--rng", spec["rng"].as_str().unwrap()]);
        let img2img = init_image(&spec).map(|(path, strength)| (path, strength.to_string()));
        if let Some((path, strength)) = &img2img {
            args.extend([
                "--init-image",
                path.to_str().unwrap(),
                "--strength",
                strength.as_str(),
            ]);
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
            assert!(
                worst <= PIXEL_TOLERANCE,
                "{key} image {i}: {worst} levels off"
            );
        }
    }
}

#[test]
fn cli_images_match_k_diffusion_within_one_level() {
    check_cli(K_DIFFUSION);
}

#[test]
fn cli_images_of_sde_samplers_match_k_diffusion_within_one_level() {
    check_cli(K_DIFFUSION_SDE);
}

#[test]
fn cli_images_of_3m_sde_match_k_diffusion_within_one_level() {
    check_cli(K_DIFFUSION_SDE_3M);
}

#[test]
fn cli_images_of_a1111_own_samplers_match_a1111_within_one_level() {
    check_cli(A1111_OWN);
}

#[test]
fn cli_images_of_ddim_cfgpp_dpm_fast_and_timestep_img2img_match_a1111_within_one_level() {
    check_cli(A1111_CFGPP);
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
        (
            "Euler a",
            Some("kl_optimal"),
            "Sampler: Euler a, Schedule type: KL Optimal, ",
        ),
        // A1111's own DDIM and PLMS write no schedule type; its LCM does.
        ("ddim", None, "Sampler: DDIM, CFG scale: "),
        ("PLMS", None, "Sampler: PLMS, CFG scale: "),
        ("unipc", None, "Sampler: UniPC, CFG scale: "),
        ("ddim_cfgpp", None, "Sampler: DDIM CFG++, CFG scale: "),
        (
            "DPM fast",
            None,
            "Sampler: DPM fast, Schedule type: Automatic, ",
        ),
        (
            "k_dpm_ad",
            None,
            "Sampler: DPM adaptive, Schedule type: Automatic, ",
        ),
        ("LCM", None, "Sampler: LCM, Schedule type: Automatic, "),
        (
            "k_lcm",
            Some("Align Your Steps"),
            "Sampler: LCM, Schedule type: Align Your Steps, ",
        ),
    ] {
        let out = dir.join("out.png");
        let mut args = vec![
            "generate",
            "--prompt",
            "a fox",
            "--steps",
            "3",
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

/// `sd info --json`: the parsed parameters, pairs in the file's order.
#[test]
fn info_json_gives_the_parsed_parameters() {
    let out = scratch("info-json").join("out.png");
    let run = sd_command(&[
        "generate",
        "--prompt",
        "a fox, at night",
        "--negative-prompt",
        "blurry",
        "--steps",
        "2",
        "--scheduler",
        "DDIM",
        "--quiet",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = stdout(&sd_command(&["info", "--json", out.to_str().unwrap()]));
    let parsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed["prompt"], "a fox, at night");
    assert_eq!(parsed["negative_prompt"], "blurry");
    let pairs = parsed["parameters"].as_array().unwrap();
    assert_eq!(pairs[0], serde_json::json!(["Steps", "2"]));
    assert_eq!(pairs[1], serde_json::json!(["Sampler", "DDIM"]));
    // The plain form is the same parameters printed back as A1111 writes them.
    let plain = stdout(&sd_command(&["info", out.to_str().unwrap()]));
    assert!(
        plain.starts_with("a fox, at night\nNegative prompt: blurry\nSteps: 2, Sampler: DDIM, "),
        "{plain}"
    );
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
        "DPM++ 3M SDE [k_dpmpp_3m_sde, Automatic = exponential]",
        "DPMSolverSDEScheduler",
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
