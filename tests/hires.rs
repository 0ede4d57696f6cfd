//! The hires fix against its reference (`fixtures/goldens/hires.json`, written by
//! `tools/fixturegen/hires.py`: A1111's hires fix composed from diffusers pipelines and torch's
//! `interpolate` on the tiny model), each latent upscaler against torch, and `sd generate
//! --hires-*` / `sd serve`'s `enable_hr` giving the library's image.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use sd_core::HostTensor;
use sd_core::weights::SafetensorsFile;
use serde_json::Value;
use stable_diffusion::png::read_rgb;
use stable_diffusion::{
    GenerationRequest, HiresFix, LatentUpscaler, LoadOptions, PromptMode, Seeds,
};
use support::cli::{assert_fails_naming, path_arg, scratch, sd};
use support::{assert_matches_goldens, goldens, load_tiny, max_level_difference};

/// Ours follows torch's CPU kernels (same taps, weights and summation order) but is not bit
/// for bit: the nearest modes are exact, the filtered ones differ by at most 2.2e-6 (bicubic
/// shrinking to 11x9) on inputs up to |3.0|, a few ulps, presumably from fused multiply-adds or
/// wider intermediates in torch's vectorised build.
const RESIZE_TOLERANCE: f32 = 5e-6;

fn manifest() -> Value {
    let text = std::fs::read_to_string(goldens().join("hires.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn golden(key: &str) -> HostTensor {
    let file = SafetensorsFile::open(goldens().join("hires").join("hires.safetensors")).unwrap();
    file.get(key).unwrap()
}

fn max_abs_diff(a: &HostTensor, b: &HostTensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn every_latent_upscaler_resizes_as_torch_interpolate() {
    let manifest = manifest();
    let input = golden("resize/input");
    let sizes = manifest["resize_sizes"].as_array().unwrap();
    for mode in LatentUpscaler::ALL {
        let spec = &manifest["latent_upscale_modes"][mode.a1111_name()];
        assert_eq!(spec["mode"], mode.torch_mode(), "{mode}");
        assert_eq!(spec["antialias"], mode.antialias(), "{mode}");
        for size in sizes {
            let (h, w) = (
                size[0].as_u64().unwrap() as usize,
                size[1].as_u64().unwrap() as usize,
            );
            let expected = golden(&format!("resize/{}/{h}x{w}", mode.a1111_name()));
            let ours = mode.resize(&input, h, w).unwrap();
            let diff = max_abs_diff(&ours, &expected);
            println!("{mode} to {h}x{w}: max abs diff {diff:.2e}");
            assert!(diff <= RESIZE_TOLERANCE, "{mode} to {h}x{w}: off by {diff}");
        }
    }
}

/// The library request of a run of hires.json.
fn request_of(spec: &Value) -> GenerationRequest {
    let fix = match (
        spec["hr_resize_x"].as_u64().unwrap() as usize,
        spec["hr_resize_y"].as_u64().unwrap() as usize,
    ) {
        (0, 0) => HiresFix::scale(spec["hr_scale"].as_f64().unwrap()),
        (x, y) => HiresFix::resize(x, y),
    };
    let fix = fix
        .steps(spec["hr_second_pass_steps"].as_u64().unwrap() as usize)
        .denoising_strength(spec["denoising_strength"].as_f64().unwrap())
        .upscaler(spec["hr_upscaler"].as_str().unwrap().parse().unwrap());
    let request = GenerationRequest::new(spec["prompt"].as_str().unwrap())
        .negative_prompt(spec["negative_prompt"].as_str().unwrap())
        .steps(spec["steps"].as_u64().unwrap() as usize)
        .guidance_scale(spec["guidance_scale"].as_f64().unwrap() as f32)
        .scheduler(spec["sampler"].as_str().unwrap())
        .prompt_mode(PromptMode::Plain)
        .size(
            spec["width"].as_u64().unwrap() as usize,
            spec["height"].as_u64().unwrap() as usize,
        )
        .hires(fix);
    match &spec["seed"] {
        Value::Array(seeds) => request.seeds(seeds.iter().map(|s| s.as_u64().unwrap()).collect()),
        seed => request.seed(seed.as_u64().unwrap()),
    }
}

fn check_run(key: &str) {
    let spec = manifest()["runs"][key].clone();
    let sd = load_tiny(&support::fixtures().join("tiny-sd"), LoadOptions::default());
    let generation = sd.generate(&request_of(&spec)).unwrap();
    let pngs: Vec<_> = spec["pngs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| goldens().join("hires").join(p.as_str().unwrap()))
        .collect();
    assert_matches_goldens(
        &format!("hires {key}"),
        &generation,
        &golden(&format!("{key}/latents")),
        &pngs,
    );
}

#[test]
fn hires_scale_with_the_bilinear_latent_upscaler_matches_the_reference() {
    check_run("euler/scale1.5/latent");
}

#[test]
fn hires_resize_with_crop_and_bicubic_antialiased_matches_the_reference() {
    check_run("euler_a/resize96x80/bicubic_antialiased");
}

#[test]
fn hires_batch_with_a_seed_per_image_matches_the_reference() {
    check_run("euler/scale2/nearest_exact/seeds3_4");
}

#[test]
fn hires_progress_counts_both_passes_and_finish_in_the_first_skips_the_second() {
    let spec = manifest()["runs"]["euler/scale1.5/latent"].clone();
    let sd = load_tiny(&support::fixtures().join("tiny-sd"), LoadOptions::default());
    let request = request_of(&spec);
    let mut seen = Vec::new();
    let generation = sd
        .generate_with_progress(&request, |p| {
            seen.push((p.step, p.total, p.latents.shape()[3]));
            stable_diffusion::Control::Continue
        })
        .unwrap();
    // 6 first-pass steps at 32 latents, then the last 4 of 8 at 48.
    let widths: Vec<usize> = seen.iter().map(|s| s.2).collect();
    assert_eq!(widths, [32, 32, 32, 32, 32, 32, 48, 48, 48, 48]);
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, s)| s.0 == i + 1 && s.1 == 10)
    );
    assert_eq!(generation.images[0].width(), 96);

    // Finishing during the first pass decodes it at the first pass's size (A1111's interrupt).
    let generation = sd
        .generate_with_progress(&request, |p| {
            if p.step == 3 {
                stable_diffusion::Control::Finish
            } else {
                stable_diffusion::Control::Continue
            }
        })
        .unwrap();
    assert_eq!(generation.images[0].width(), 64);
}

#[test]
fn hires_requests_that_cannot_run_name_the_setting() {
    let sd = load_tiny(&support::fixtures().join("tiny-sd"), LoadOptions::default());
    let base = || GenerationRequest::new("a").steps(2).size(64, 64);
    let error = |request: GenerationRequest| sd.generate(&request).unwrap_err().to_string();
    // 64 × 300 = 19200 pixels, past the pipeline's largest side. (An odd latent side such as
    // 64 × 1.3 → 41 latents is no error: the UNet takes odd sides, as diffusers' does.)
    let text = error(base().hires(HiresFix::scale(300.0)));
    assert!(
        text.contains("hires width") && text.contains("19200"),
        "{text}"
    );
    let text = error(base().hires(HiresFix::scale(2.0).denoising_strength(1.5)));
    assert!(text.contains("denoising strength"), "{text}");
    let init = stable_diffusion::RgbImage::new(64, 64, vec![0; 64 * 64 * 3]).unwrap();
    let text = error(base().init_image(init, 0.5).hires(HiresFix::scale(2.0)));
    assert!(text.contains("hires") && text.contains("txt2img"), "{text}");
    let mut request = base().hires(HiresFix::scale(2.0));
    request.seeds = Seeds::PerImage(vec![1]);
    assert!(sd.generate(&request).is_ok());
}

/// `sd generate` arguments for run `key` of hires.json.
fn cli_args(spec: &Value, output: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "generate",
        "--prompt",
        spec["prompt"].as_str().unwrap(),
        "--negative-prompt",
        spec["negative_prompt"].as_str().unwrap(),
        "--plain-prompt",
        "--scheduler",
        spec["sampler"].as_str().unwrap(),
        "--quiet",
        "--output",
        output,
    ]
    .map(String::from)
    .to_vec();
    let number = |key: &str| spec[key].to_string();
    for (flag, key) in [
        ("--steps", "steps"),
        ("--cfg", "guidance_scale"),
        ("-W", "width"),
        ("-H", "height"),
        ("--seed", "seed"),
        ("--hires-steps", "hr_second_pass_steps"),
        ("--hires-denoise", "denoising_strength"),
    ] {
        args.extend([flag.to_string(), number(key)]);
    }
    match (
        number("hr_resize_x").as_str(),
        number("hr_resize_y").as_str(),
    ) {
        ("0", "0") => args.extend(["--hires-scale".to_string(), number("hr_scale")]),
        (x, y) => args.extend(["--hires-resize".to_string(), format!("{x}x{y}")]),
    }
    args.extend([
        "--hires-upscaler".to_string(),
        spec["hr_upscaler"].as_str().unwrap().to_string(),
    ]);
    args
}

#[test]
fn sd_generate_hires_flags_give_the_reference_image_and_a1111s_infotext() {
    let dir = scratch("hires");
    let key = "euler_a/resize96x80/bicubic_antialiased";
    let spec = manifest()["runs"][key].clone();
    let out = dir.join("hires.png");
    let args = cli_args(&spec, path_arg(&out));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = sd(&args);
    assert!(run.status.success(), "{}", support::cli::stderr(&run));
    let ours = read_rgb(&out).unwrap();
    let golden_png = goldens()
        .join("hires")
        .join(spec["pngs"][0].as_str().unwrap());
    let worst = max_level_difference(&ours, &read_rgb(golden_png).unwrap());
    assert!(worst <= support::PIXEL_TOLERANCE, "off by {worst} levels");
    let text = stable_diffusion::png::read_parameters(&out)
        .unwrap()
        .unwrap();
    // A1111 writes the first pass's size, then the hires entries after the strength.
    assert!(text.contains("Size: 64x64, "), "{text}");
    assert!(
        text.contains(
            "Denoising strength: 0.75, Hires resize: 96x80, \
             Hires upscaler: Latent (bicubic antialiased), "
        ),
        "{text}"
    );
}

#[test]
fn sd_generate_hires_mistakes_name_the_flag() {
    let dir = scratch("hires-bad");
    let out = dir.join("x.png");
    let out = path_arg(&out);
    let base = ["generate", "--prompt", "a", "--steps", "1", "-o", out];
    let with = |extra: &[&'static str]| [&base[..], extra].concat();
    assert_fails_naming(
        &sd(&with(&[
            "--hires-scale",
            "2",
            "--hires-upscaler",
            "ESRGAN_4x",
        ])),
        &["--hires-upscaler", "ESRGAN_4x", "Latent (nearest-exact)"],
    );
    assert_fails_naming(
        &sd(&with(&["--hires-resize", "1024by768"])),
        &["--hires-resize", "1024by768"],
    );
    assert_fails_naming(
        &sd(&with(&["--hires-scale", "2", "--hires-denoise", "0"])),
        &["denoising strength"],
    );
    // Hires settings without a hires size, or both sizes at once: clap's usage errors.
    let run = sd(&with(&["--hires-steps", "3"]));
    assert_eq!(run.status.code(), Some(2), "{}", support::cli::stderr(&run));
    let run = sd(&with(&["--hires-scale", "2", "--hires-resize", "128x128"]));
    assert_eq!(run.status.code(), Some(2), "{}", support::cli::stderr(&run));
}
