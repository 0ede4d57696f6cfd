//! Whole generations against diffusers: the runs of `fixtures/goldens/generations.json`
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves
//! (written by `tools/fixturegen/generations.py`) on the tiny pipelines, in plain prompt mode.
//! Final latents must match diffusers' `output_type="latent"` result and the decoded image its
//! PNG.

mod support;

use std::path::Path;

use sd_core::HostTensor;
use sd_core::weights::SafetensorsFile;
use serde_json::Value;
use stable_diffusion::png::{read_gray, read_rgb};
use stable_diffusion::{GenerationRequest, LoadOptions, PromptMode, StableDiffusion};
use support::{assert_matches_goldens, goldens, load_tiny, load_tiny_inpainting};

fn run_spec(model: &str, key: &str) -> Value {
    let path = goldens().join("generations.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json["runs"][model][key].clone()
}

/// The img2img/inpainting inputs sit next to generations.json (the JSON names them relative to a
/// model's folder: `../init_image.png`).
fn golden_input(name: &str) -> std::path::PathBuf {
    goldens().join(Path::new(name).file_name().unwrap())
}

fn request_of(spec: &Value) -> GenerationRequest {
    let mut request = GenerationRequest::new(spec["prompt"].as_str().unwrap())
        .negative_prompt(spec["negative_prompt"].as_str().unwrap_or(""))
        .steps(spec["num_inference_steps"].as_u64().unwrap() as usize)
        .guidance_scale(spec["guidance_scale"].as_f64().unwrap() as f32)
        .scheduler(spec["sampler"].as_str().unwrap())
        // The goldens are diffusers runs: prompts read literally.
        .prompt_mode(PromptMode::Plain);
    request = match &spec["seed"] {
        Value::Array(seeds) => request.seeds(seeds.iter().map(|s| s.as_u64().unwrap()).collect()),
        seed => request.seed(seed.as_u64().unwrap()),
    };
    if let Some(on) = spec["scheduler_overrides"]["use_karras_sigmas"].as_bool() {
        request = request.karras_sigmas(on);
    }
    if let Some(n) = spec["num_images_per_prompt"].as_u64() {
        request.batch_size = n as usize;
    }
    if let (Some(w), Some(h)) = (spec["width"].as_u64(), spec["height"].as_u64()) {
        request = request.size(w as usize, h as usize);
    }
    if let Some(init) = spec["init_image"].as_str() {
        let image = read_rgb(golden_input(init)).unwrap();
        request = request.init_image(image, spec["strength"].as_f64().unwrap());
    }
    if let Some(mask) = spec["mask_image"].as_str() {
        request = request.mask(read_gray(golden_input(mask)).unwrap());
    }
    request
}

fn pngs_of(spec: &Value) -> Vec<String> {
    match (&spec["png"], &spec["pngs"]) {
        (Value::String(png), _) => vec![png.clone()],
        (_, Value::Array(pngs)) => pngs
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect(),
        _ => panic!("run without png"),
    }
}

fn golden_latents(model: &str, key: &str) -> HostTensor {
    let file =
        SafetensorsFile::open(goldens().join(model).join("generations.safetensors")).unwrap();
    file.get(&format!("{key}/latents")).unwrap()
}

/// Run `key` of `model`'s goldens on `sd` and compare latents and pixels.
fn check_run(sd: &StableDiffusion<sd_core::cpu::CpuBackend>, model: &str, key: &str) {
    let spec = run_spec(model, key);
    let generation = sd.generate(&request_of(&spec)).unwrap();

    let expected = golden_latents(model, key);
    let pngs: Vec<_> = pngs_of(&spec)
        .iter()
        .map(|png| goldens().join(model).join(png))
        .collect();
    assert_matches_goldens(&format!("{model} {key}"), &generation, &expected, &pngs);
}

fn check(model: &str, key: &str) {
    let sd = load_tiny(&support::fixtures().join(model), LoadOptions::default());
    check_run(&sd, model, key);
}

macro_rules! golden_cases {
    ($($name:ident: $model:literal, $key:literal;)*) => {
        $(
            #[test]
            fn $name() {
                check($model, $key);
            }
        )*
    };
}

golden_cases! {
    tiny_sd_txt2img_pndm_seed0: "tiny-sd", "txt2img/pndm/seed0";
    tiny_sd_txt2img_pndm_seed42: "tiny-sd", "txt2img/pndm/seed42";
    tiny_sd_txt2img_euler_ancestral_seed0: "tiny-sd", "txt2img/euler_ancestral/seed0";
    tiny_sd_txt2img_euler_ancestral_seed42: "tiny-sd", "txt2img/euler_ancestral/seed42";
    tiny_sd_txt2img_ddim_without_negative_prompt: "tiny-sd", "txt2img/ddim/seed0";
    tiny_sd_txt2img_dpmpp_2m_karras: "tiny-sd", "txt2img/dpmpp_2m_karras/seed0";
    tiny_sd_txt2img_guidance_one_skips_the_unconditional_pass: "tiny-sd", "txt2img/pndm/guidance1";
    tiny_sd_txt2img_batch_from_one_generator: "tiny-sd", "txt2img/pndm/batch2";
    tiny_sd_txt2img_batch_from_a_generator_list: "tiny-sd", "txt2img/euler_ancestral/generators5_6";
    tiny_sd_img2img_pndm_strength_0_6: "tiny-sd", "img2img/pndm";
    tiny_sd_inpaint_latent_blending: "tiny-sd", "inpaint_legacy/pndm";
    tiny_sd_inpaint_latent_blending_with_a_generator_list: "tiny-sd", "inpaint_legacy/pndm/generators13_14";
    tiny_sd_alt_txt2img_pndm_seed0: "tiny-sd-alt", "txt2img/pndm/seed0";
    tiny_sd_alt_txt2img_pndm_seed42: "tiny-sd-alt", "txt2img/pndm/seed42";
    tiny_sd_alt_txt2img_euler_ancestral_seed0: "tiny-sd-alt", "txt2img/euler_ancestral/seed0";
    tiny_sd_alt_txt2img_euler_ancestral_seed42: "tiny-sd-alt", "txt2img/euler_ancestral/seed42";
    tiny_sd_alt_txt2img_ddim_without_negative_prompt: "tiny-sd-alt", "txt2img/ddim/seed0";
    tiny_sd_alt_txt2img_dpmpp_2m_karras: "tiny-sd-alt", "txt2img/dpmpp_2m_karras/seed0";
    tiny_sd_alt_txt2img_guidance_one_skips_the_unconditional_pass: "tiny-sd-alt", "txt2img/pndm/guidance1";
    tiny_sd_alt_txt2img_batch_from_one_generator: "tiny-sd-alt", "txt2img/pndm/batch2";
    tiny_sd_alt_txt2img_batch_from_a_generator_list: "tiny-sd-alt", "txt2img/euler_ancestral/generators5_6";
    tiny_sd_alt_img2img_pndm_strength_0_6: "tiny-sd-alt", "img2img/pndm";
    tiny_sd_alt_inpaint_latent_blending: "tiny-sd-alt", "inpaint_legacy/pndm";
    tiny_sd_alt_inpaint_latent_blending_with_a_generator_list: "tiny-sd-alt", "inpaint_legacy/pndm/generators13_14";
}

#[test]
fn tiny_sd_inpaint_with_the_inpainting_unet() {
    let sd = load_tiny_inpainting();
    assert!(sd.is_inpainting());
    check_run(&sd, "tiny-sd", "inpaint/pndm");
}

/// Strength 0.8 and a list of generators: the image latents and the masked image's latents are
/// drawn from the first generator only, as diffusers does.
#[test]
fn tiny_sd_inpaint_with_the_inpainting_unet_and_a_generator_list() {
    let sd = load_tiny_inpainting();
    check_run(&sd, "tiny-sd", "inpaint/pndm/generators11_12");
}

/// The LDM single-file copy of tiny-sd (configs from the folder, as diffusers'
/// `from_single_file(config=...)`) reproduces the folder's goldens.
#[test]
fn single_file_gives_the_same_image_as_the_folder() {
    let options = LoadOptions::default().config_dir(support::fixtures().join("tiny-sd"));
    let sd = load_tiny(
        &support::fixtures().join("ldm").join("tiny-sd.safetensors"),
        options,
    );
    check_run(&sd, "tiny-sd", "txt2img/euler_ancestral/seed42");
    check_run(&sd, "tiny-sd", "img2img/pndm");
}

/// bf16 precision against the f32 path on the golden runs. Measured: 5–8 levels at most and
/// PSNR 44–48 dB over these eight runs (the rounding of activations and attention
/// probabilities to bf16, 2⁻⁹ relative, compounds over 10–20 steps of a random model whose
/// latents reach 40–110; bf16 in the linear layers alone gives 2–4 levels, in the convs alone
/// 4–8; one earlier attention layout gave 13). Issue 8 asked for 2 levels; not met.
const BF16_MAX_LEVELS: u8 = 16;
const BF16_MIN_PSNR_DB: f64 = 40.0;

/// The bf16 path (packed bf16 weights, bf16 products with f32 accumulation) stays close to the
/// f32 path's images on both tiny pipelines; a wrong or dropped term would give noise.
#[test]
fn bf16_images_stay_close_to_f32() {
    use sd_core::cpu::{CpuBackend, Precision};
    let keys = [
        "txt2img/pndm/seed0",
        "txt2img/euler_ancestral/seed42",
        "txt2img/dpmpp_2m_karras/seed0",
        "img2img/pndm",
    ];
    for model in ["tiny-sd", "tiny-sd-alt"] {
        let path = support::fixtures().join(model);
        let f32_sd = load_tiny(&path, LoadOptions::default());
        let bf16_sd = StableDiffusion::load_on(
            CpuBackend::with_precision(Precision::Bf16),
            &path,
            LoadOptions::default(),
        )
        .unwrap();
        for key in keys {
            let spec = run_spec(model, key);
            let request = request_of(&spec);
            let mut images = Vec::new();
            for sd in [&f32_sd, &bf16_sd] {
                images.push(sd.generate(&request).unwrap().images);
            }
            for (a, b) in images[0].iter().zip(&images[1]) {
                let worst = a
                    .pixels()
                    .iter()
                    .zip(b.pixels())
                    .map(|(x, y)| x.abs_diff(*y))
                    .max()
                    .unwrap_or(0);
                let mse = a
                    .pixels()
                    .iter()
                    .zip(b.pixels())
                    .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                    .sum::<f64>()
                    / a.pixels().len() as f64;
                let psnr = 10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10();
                println!("{model} {key}: bf16 vs f32: max {worst} levels, PSNR {psnr:.1} dB");
                assert!(
                    worst <= BF16_MAX_LEVELS && psnr >= BF16_MIN_PSNR_DB,
                    "{model} {key}: bf16 differs from f32 by {worst} levels, PSNR {psnr:.1} dB"
                );
            }
        }
    }
}

/// Low-memory loading drops the UNet and the VAE after each generation and rebuilds them for
/// the next: the goldens still match, twice in a row, and nothing stays built in between.
#[test]
fn low_memory_generations_match_the_goldens_and_release_the_models() {
    let path = support::fixtures().join("tiny-sd");
    let sd = load_tiny(&path, LoadOptions::default().low_memory(true));
    for key in ["txt2img/pndm/seed0", "img2img/pndm"] {
        check_run(&sd, "tiny-sd", key);
        let pipeline = sd.pipeline();
        assert!(!pipeline.denoiser().is_built(), "{key}: UNet still held");
        assert!(!pipeline.codec().vae().is_built(), "{key}: VAE still held");
    }
    // Resident loading keeps both.
    let resident = load_tiny(&path, LoadOptions::default());
    check_run(&resident, "tiny-sd", "txt2img/pndm/seed0");
    assert!(
        resident.pipeline().denoiser().is_built() && resident.pipeline().codec().vae().is_built()
    );
}
