//! Live previews: the library's `Previewer` from a progress callback, and `sd generate
//! --preview-every`. The TAESD preview of the last step decodes the final latents, so it must be
//! diffusers' TAESD-decoded image (golden by `tools/taesd_goldens.py tiny`).
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use stable_diffusion::png::read_rgb;
use stable_diffusion::preview::{PreviewMethod, Previewer};
use stable_diffusion::{Control, GenerationRequest, LoadOptions, PromptMode, RgbImage};
use support::cli::{golden_run, sd};
use support::{PIXEL_TOLERANCE, fixtures, goldens, load_tiny, max_level_difference};

fn request() -> GenerationRequest {
    GenerationRequest::new("a photograph of an astronaut riding a horse")
        .negative_prompt("blurry, low quality")
        .steps(10)
        .guidance_scale(7.5)
        .prompt_mode(PromptMode::Plain)
        .scheduler("PNDM")
        .seed(0)
}

fn taesd_golden() -> RgbImage {
    read_rgb(goldens().join("taesd/txt2img_pndm_seed0_taesd.png")).unwrap()
}

#[test]
fn a_progress_callback_gets_a_preview_every_step() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    let backend = sd.pipeline().backend();
    let taesd = Previewer::load(
        backend,
        &PreviewMethod::Taesd(fixtures().join("tiny-taesd-sd")),
    )
    .unwrap();
    let approx = Previewer::load(backend, &PreviewMethod::Approx).unwrap();
    let (mut previews, mut total) = (Vec::new(), 0);
    sd.generate_with_progress(&request(), |progress| {
        total = progress.total;
        let full = taesd.render(backend, progress.latents, 0).unwrap();
        let cheap = approx.render(backend, progress.latents, 0).unwrap();
        previews.push((progress.step, full, cheap));
        Control::Continue
    })
    .unwrap();
    // PNDM evaluates the model 11 times for 10 steps: one preview per evaluation.
    assert_eq!(total, 11);
    assert_eq!(
        previews.iter().map(|p| p.0).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for (_, full, cheap) in &previews {
        assert_eq!((full.width(), full.height()), (64, 64));
        assert_eq!(
            (cheap.width(), cheap.height()),
            (32, 32),
            "one pixel per latent"
        );
    }
    let last = &previews[total - 1].1;
    assert_ne!(&previews[0].1, last, "previews follow the denoising");
    let worst = max_level_difference(last, &taesd_golden());
    assert!(worst <= PIXEL_TOLERANCE, "last preview differs by {worst}");
}

#[test]
fn sd_generate_writes_previews_and_refuses_unknown_methods() {
    let dir = std::env::temp_dir().join(format!("sd-previews-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (out, preview) = (dir.join("out.png"), dir.join("preview.png"));
    let taesd = format!("taesd:{}", fixtures().join("tiny-taesd-sd").display());
    let run = |method: &str| {
        sd(&[
            &golden_run(
                "a photograph of an astronaut riding a horse",
                "blurry, low quality",
                "PNDM",
            )[..],
            &[
                "--preview-every",
                "1",
                "--preview",
                method,
                "--preview-file",
                preview.to_str().unwrap(),
                "-q",
                "--output",
                out.to_str().unwrap(),
            ][..],
        ]
        .concat())
    };
    let result = run(&taesd);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let worst = max_level_difference(&read_rgb(&preview).unwrap(), &taesd_golden());
    assert!(
        worst <= PIXEL_TOLERANCE,
        "last TAESD preview differs by {worst}"
    );

    let result = run("approx");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let cheap = read_rgb(&preview).unwrap();
    assert_eq!((cheap.width(), cheap.height()), (32, 32));

    let result = run("blurry");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        !result.status.success() && stderr.contains("--preview"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
