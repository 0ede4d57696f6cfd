//! `GET progress`'s `current_image` comes from the same previewer as `sd generate --preview`:
//! TAESD's full-size decode with `sd serve --preview taesd:PATH`, the one-pixel-per-latent
//! approximation by default, nothing with `--preview none`.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

#[path = "serve_support/mod.rs"]
mod serve_support;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use serve_support::{Server, fixtures, raw_request};
use stable_diffusion::RgbImage;

/// A job long enough to be watched: 150 steps at 64×64 on the tiny model.
const LONG: &str = r#"{"prompt": "slow", "seed": 3, "steps": 150, "width": 64, "height": 64}"#;

/// Start LONG on a server started with `args`, wait for its second step, and return
/// `current_image` (decoded) from `GET progress`; the job is interrupted afterwards.
fn preview_of_running_job(args: &[&str]) -> Option<RgbImage> {
    let tiny = fixtures().join("tiny-sd").display().to_string();
    let mut all = vec!["--model", tiny.as_str()];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let address = server.address;
    let job = std::thread::spawn(move || {
        raw_request(address, "POST", "/sdapi/v1/txt2img", &[], LONG.as_bytes())
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let progress: Value = loop {
        let progress = server.get("/sdapi/v1/progress").ok();
        if progress["state"]["sampling_step"].as_u64().unwrap() >= 2 {
            break progress;
        }
        assert!(Instant::now() < deadline, "no progress: {progress}");
        std::thread::sleep(Duration::from_millis(20));
    };
    server.post("/sdapi/v1/interrupt", "").ok();
    job.join().unwrap().ok();
    let image = progress["current_image"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(image)
        .unwrap();
    Some(stable_diffusion::image_file::decode_rgb(&bytes, "preview", u64::MAX).unwrap())
}

#[test]
fn current_image_is_taesd_full_size_when_asked_and_the_latent_approximation_by_default() {
    let taesd = format!("taesd:{}", fixtures().join("tiny-taesd-sd").display());
    let image = preview_of_running_job(&["--preview", &taesd]).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));

    // One pixel per latent: the image's size over the VAE's factor.
    let image = preview_of_running_job(&[]).unwrap();
    assert!(image.width() < 64 && 64 % image.width() == 0);

    assert!(preview_of_running_job(&["--preview", "none"]).is_none());
}

#[test]
fn a_bad_preview_method_stops_sd_serve_before_it_listens() {
    let run = std::process::Command::new(serve_support::sd_bin())
        .args([
            "serve",
            "--preview",
            "taesd:/nonexistent/taesd",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/taesd"), "{err}");
}
