//! The web page at `/` in a real browser: headless Chromium (Debian's `chromium`, installed by
//! .ci/run) loads it with the form's fields in the query (the page fills its form from them
//! and presses Generate), waits for the image, and the test reads the page back: the gallery's
//! image equals `sd generate`'s for the same parameters and its caption shows them. A
//! screenshot is written to target/browser-test.png. Without chromium the test says so and
//! passes, except in CI (`CI=true`), where it fails.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

#[path = "serve_support/mod.rs"]
mod serve_support;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use serve_support::{Server, assert_same_pixels, fixtures, scratch, sd_generate, skip_outside_ci};
use stable_diffusion::image_file::{decode_rgb, read_rgb};

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// Chromium's headless flags: no sandbox (CI runs as root), no GPU, and a virtual-time budget
/// that lets the page's fetches finish before the dump or screenshot.
fn headless(browser: &str, extra: &[&str], url: &str) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=60000",
        ])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_web_page_generates_in_chromium_and_shows_the_parameters() {
    let Some(browser) = chromium() else {
        skip_outside_ci("chromium is not installed (apt-get install chromium; .ci/run does)");
        return;
    };
    let tiny = fixtures().join("tiny-sd");
    let server = Server::start(&["--model", tiny.to_str().unwrap()]);
    let url = format!(
        "http://{}/?prompt=a%20lighthouse&steps=3&width=64&height=64&seed=42&cfg_scale=7&generate=1",
        server.address
    );
    let dom = headless(browser, &["--dump-dom"], &url);

    // The gallery's one figure: the image as a data URL, the parameters as its caption.
    let figure = dom
        .split("<figure class=\"result\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no image in the gallery:\n{dom}"));
    let data = figure
        .split("src=\"data:image/png;base64,")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    let caption = figure
        .split("<figcaption>")
        .nth(1)
        .and_then(|rest| rest.split("</figcaption>").next())
        .unwrap();
    for needle in [
        "a lighthouse",
        "Steps: 3",
        "Sampler: Euler a",
        "Seed: 42",
        "Size: 64x64",
    ] {
        assert!(
            caption.contains(needle),
            "`{needle}` not in the caption: {caption}"
        );
    }
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    let shown = decode_rgb(&png, "page image", u64::MAX).unwrap();
    let dir = scratch("browser");
    let reference = sd_generate(
        &dir,
        "lighthouse",
        &[
            "--model",
            tiny.to_str().unwrap(),
            "--prompt",
            "a lighthouse",
            "--steps",
            "3",
            "-W",
            "64",
            "-H",
            "64",
            "--seed",
            "42",
            "--cfg",
            "7",
            "--scheduler",
            "Euler a",
        ],
    );
    assert_same_pixels(&shown, &read_rgb(&reference).unwrap(), "the page's image");

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-test.png");
    let flag = format!("--screenshot={}", screenshot.display());
    headless(browser, &[&flag, "--window-size=1000,900"], &url);
    assert!(screenshot.is_file());
    println!("screenshot: {}", screenshot.display());
    let _ = std::fs::remove_dir_all(&dir);
}
