//! `sd serve` driven by a real A1111 client that no one here wrote: the `webuiapi` package from
//! PyPI runs tests/webuiapi/client_test.py (txt2img and img2img with a mask equal to `sd
//! generate`'s pixels, png-info, interrupt, util_set_model, get_sd_models, get_samplers).
//!
//! The Python comes from `SD_WEBUIAPI_PYTHON` (.ci/run installs webuiapi into a throw-away venv
//! and sets it), else `python3` if it can import webuiapi. Without it the test says so and
//! passes, except in CI (`CI=true`), where it fails.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

#[path = "serve_support/mod.rs"]
mod serve_support;

use std::process::Command;

use sd_testkit::AUTO_MEANS_F32;
use serve_support::{Server, fixtures, python_with_webuiapi, scratch, sd_bin};

#[test]
fn the_webuiapi_client_gets_sd_generates_images() {
    let Some(python) = python_with_webuiapi() else {
        return;
    };
    let models = fixtures();
    let server = Server::start(&["--models-dir", models.to_str().unwrap()]);
    let dir = scratch("webuiapi");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webuiapi/client_test.py");
    let run = Command::new(&python)
        .arg(&script)
        .env("SD_BIN", sd_bin())
        .env("SD_PORT", server.address.port().to_string())
        .env("SD_MODEL", models.join("tiny-sd"))
        .env("SD_SCRATCH", &dir)
        // The script's `sd generate` reference runs as the server does (f32 under `auto`):
        // without this, on a CPU with avx512_bf16 it ran bf16 against an f32 server.
        .env(AUTO_MEANS_F32.0, AUTO_MEANS_F32.1)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "the webuiapi checks failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&run.stderr),
        server.log.lock().unwrap().join("\n")
    );
    assert!(stdout.contains("webuiapi: all checks passed"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
