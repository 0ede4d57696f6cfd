//! `sd serve`'s hires fix: txt2img with `enable_hr` gives `sd generate --hires-*`'s pixels
//! and A1111's infotext; the latent upscalers are listed; a non-latent upscaler, a hires size
//! over the server's cap and hires variants it cannot run are 422s.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

#[path = "serve_support/mod.rs"]
mod serve_support;

use serde_json::Value;
use serve_support::{Server, assert_same_pixels, fixtures, images_of, scratch, sd_generate};
use stable_diffusion::image_file::read_rgb;

#[test]
fn txt2img_with_enable_hr_matches_sd_generate_and_writes_a1111s_hires_infotext() {
    let dir = scratch("hires");
    let tiny = fixtures().join("tiny-sd").display().to_string();
    let server = Server::start(&["--model", &tiny, "--max-side", "128"]);

    let modes = server.get("/sdapi/v1/latent-upscale-modes").ok();
    let names: Vec<&str> = modes
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Latent",
            "Latent (antialiased)",
            "Latent (bicubic)",
            "Latent (bicubic antialiased)",
            "Latent (nearest)",
            "Latent (nearest-exact)"
        ]
    );

    let answer = server
        .post(
            "/sdapi/v1/txt2img",
            r#"{"prompt": "a red fox, snow", "seed": 77, "steps": 3, "cfg_scale": 7.5,
                "width": 64, "height": 48, "sampler_name": "Euler a", "enable_hr": true,
                "hr_scale": 1.5, "hr_second_pass_steps": 2, "hr_upscaler": "Latent (nearest)",
                "denoising_strength": 0.6, "hr_resize_x": 0, "hr_resize_y": 0,
                "hr_sampler_name": null, "hr_prompt": "", "hr_negative_prompt": ""}"#,
        )
        .ok();
    let served = images_of(&answer);
    assert_eq!((served[0].width(), served[0].height()), (96, 72));
    let reference = sd_generate(
        &dir,
        "fox",
        &[
            "--prompt",
            "a red fox, snow",
            "--seed",
            "77",
            "--steps",
            "3",
            "--cfg",
            "7.5",
            "-W",
            "64",
            "-H",
            "48",
            "--scheduler",
            "Euler a",
            "--model",
            &tiny,
            "--hires-scale",
            "1.5",
            "--hires-steps",
            "2",
            "--hires-upscaler",
            "Latent (nearest)",
            "--hires-denoise",
            "0.6",
        ],
    );
    assert_same_pixels(&served[0], &read_rgb(&reference).unwrap(), "hires txt2img");
    let info: Value = serde_json::from_str(answer["info"].as_str().unwrap()).unwrap();
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(64), Some(48))
    );
    assert_eq!(info["denoising_strength"], 0.6);
    let infotext = info["infotexts"][0].as_str().unwrap();
    assert!(
        infotext.contains(
            "Denoising strength: 0.6, Hires upscale: 1.5, Hires steps: 2, \
             Hires upscaler: Latent (nearest), "
        ),
        "{infotext}"
    );

    for (body, status, needle) in [
        (
            r#"{"enable_hr": true, "width": 64, "height": 64, "hr_upscaler": "4x-UltraSharp"}"#,
            422,
            "could not find upscaler named 4x-UltraSharp",
        ),
        (
            r#"{"enable_hr": true, "width": 64, "height": 64, "hr_scale": 4}"#,
            422,
            "hr_scale",
        ),
        (
            r#"{"enable_hr": true, "width": 64, "height": 64, "hr_prompt": "other"}"#,
            422,
            "hr_prompt",
        ),
    ] {
        let answer = server.post("/sdapi/v1/txt2img", body);
        assert_eq!(answer.status, status, "{body}: {}", answer.text());
        let detail = answer.json()["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(needle), "{body}: {detail}");
    }
    // Still answering.
    let answer = server
        .post(
            "/sdapi/v1/txt2img",
            r#"{"prompt": "x", "steps": 1, "width": 64, "height": 64}"#,
        )
        .ok();
    assert_eq!(images_of(&answer).len(), 1);
}
