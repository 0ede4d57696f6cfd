//! `GET sd-models` gives a loaded checkpoint's SHA-256 (A1111's `sha256`, `hash` its first 10
//! digits) and `GET options` the same as `sd_checkpoint_hash`; checked against coreutils'
//! `sha256sum` of the file.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

#[path = "serve_support/mod.rs"]
mod serve_support;

use serve_support::{Server, fixtures};

#[test]
fn sd_models_lists_the_sha256_of_the_loaded_checkpoint() {
    let model = fixtures().join("ldm/tiny-sd.safetensors");
    let Ok(run) = std::process::Command::new("sha256sum").arg(&model).output() else {
        eprintln!("skipped: no sha256sum on this machine");
        return;
    };
    let expected = String::from_utf8(run.stdout).unwrap();
    let expected = expected.split_whitespace().next().unwrap();

    let configs = fixtures().join("tiny-sd");
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--config-dir",
        configs.to_str().unwrap(),
    ]);
    let models = server.get("/sdapi/v1/sd-models").ok();
    assert_eq!(models[0]["title"], "tiny-sd.safetensors");
    assert_eq!(models[0]["sha256"], expected);
    assert_eq!(models[0]["hash"], &expected[..10]);
    let options = server.get("/sdapi/v1/options").ok();
    assert_eq!(options["sd_checkpoint_hash"], expected);
}
