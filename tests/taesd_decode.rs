//! Decoding the final image with TAESD (`--vae-decoder taesd:PATH`, `LoadOptions::taesd_decoder`)
//! against diffusers' pipeline with TAESD as its VAE (golden by `tools/taesd_goldens.py tiny`).
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use stable_diffusion::png::read_rgb;
use stable_diffusion::{GenerationRequest, LoadOptions, PromptMode};
use support::cli::{golden_run, sd};
use support::{PIXEL_TOLERANCE, fixtures, goldens, load_tiny, max_level_difference};

fn golden() -> stable_diffusion::RgbImage {
    read_rgb(goldens().join("taesd/txt2img_pndm_seed0_taesd.png")).unwrap()
}

#[test]
fn taesd_decodes_the_generation_as_diffusers_does() {
    let options = LoadOptions {
        taesd_decoder: Some(fixtures().join("tiny-taesd-sd")),
        ..LoadOptions::default()
    };
    let sd = load_tiny(&fixtures().join("tiny-sd"), options);
    assert!(sd.pipeline().codec().decodes_with_taesd());
    let request = GenerationRequest::new("a photograph of an astronaut riding a horse")
        .negative_prompt("blurry, low quality")
        .steps(10)
        .guidance_scale(7.5)
        .prompt_mode(PromptMode::Plain)
        .scheduler("PNDM")
        .seed(0);
    let generation = sd.generate(&request).unwrap();
    let worst = max_level_difference(&generation.images[0], &golden());
    assert!(worst <= PIXEL_TOLERANCE, "pixels differ by {worst}");
}

#[test]
fn a_taesd_of_another_latent_size_is_refused_naming_it() {
    // The 4-level tiny TAESD has 8 pixels per latent; tiny-sd's VAE has 2.
    let path = fixtures().join("tiny-taesd");
    let options = LoadOptions {
        taesd_decoder: Some(path.clone()),
        ..LoadOptions::default()
    };
    let err = stable_diffusion::StableDiffusion::load(fixtures().join("tiny-sd"), options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tiny-taesd") && err.contains("pixels per latent"),
        "{err}"
    );
}

#[test]
fn sd_generate_takes_vae_decoder_taesd() {
    let dir = std::env::temp_dir().join(format!("sd-taesd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("taesd.png");
    let taesd = format!("taesd:{}", fixtures().join("tiny-taesd-sd").display());
    let run = sd(&[
        &golden_run(
            "a photograph of an astronaut riding a horse",
            "blurry, low quality",
            "PNDM",
        )[..],
        &[
            "--vae-decoder",
            &taesd,
            "-q",
            "--output",
            out.to_str().unwrap(),
        ][..],
    ]
    .concat());
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let worst = max_level_difference(&read_rgb(&out).unwrap(), &golden());
    assert!(worst <= PIXEL_TOLERANCE, "pixels differ by {worst}");

    let bad = sd(&["generate", "--prompt", "x", "--vae-decoder", "approx", "-q"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("--vae-decoder"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
