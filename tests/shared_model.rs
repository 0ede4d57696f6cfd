//! One loaded model serving many requests: settings travel on the request, `generate` takes
//! `&self`, and one `Arc<StableDiffusion>` serves several threads, each getting exactly the image
//! a single-threaded run gives.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::sync::Arc;
use std::thread;

use sd_core::cpu::CpuBackend;
use stable_diffusion::{Generation, GenerationRequest, LoadOptions, PromptMode, StableDiffusion};
use support::{fixtures, load_tiny};

fn assert_send_sync<T: Send + Sync>() {}

/// Two requests that differ in every per-request setting: sampler (one ancestral, drawing
/// from its generator every step), seed, clip skip, prompt mode and batch seeding.
fn two_requests() -> [GenerationRequest; 2] {
    [
        GenerationRequest::new("a red fox in the snow, (detailed:1.2)")
            .scheduler("Euler a")
            .steps(6)
            .seed(11),
        GenerationRequest::new("a lighthouse at dusk")
            .negative_prompt("blurry")
            .scheduler("DPM++ 2M Karras")
            .clip_skip(2)
            .prompt_mode(PromptMode::Plain)
            .steps(5)
            .seeds(vec![3, 4]),
    ]
}

fn assert_same(what: &str, a: &Generation, b: &Generation) {
    assert_eq!(a.seeds, b.seeds, "{what}: seeds");
    assert!(a.latents == b.latents, "{what}: latents differ");
    for (x, y) in a.images.iter().zip(&b.images) {
        assert_eq!(x.pixels(), y.pixels(), "{what}: pixels differ");
    }
}

#[test]
fn one_shared_model_gives_each_thread_the_single_threaded_image() {
    assert_send_sync::<StableDiffusion<CpuBackend>>();
    let sd = Arc::new(load_tiny(
        &fixtures().join("tiny-sd"),
        LoadOptions::default(),
    ));
    let requests = two_requests();
    let alone: Vec<Generation> = requests.iter().map(|r| sd.generate(r).unwrap()).collect();

    let threads: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let sd = Arc::clone(&sd);
            thread::spawn(move || {
                (0..3)
                    .map(|_| sd.generate(&request).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (index, handle) in threads.into_iter().enumerate() {
        for (round, generation) in handle.join().unwrap().iter().enumerate() {
            assert_same(
                &format!("request {index}, round {round}"),
                &alone[index],
                generation,
            );
        }
    }
}

/// The low-memory model rebuilds its UNet and VAE per generation; shared between threads it
/// still gives every request its own image.
#[test]
fn a_shared_low_memory_model_gives_the_same_images() {
    let path = fixtures().join("tiny-sd");
    let resident = load_tiny(&path, LoadOptions::default());
    let low = Arc::new(load_tiny(&path, LoadOptions::default().low_memory(true)));
    let requests = two_requests();
    let expected: Vec<Generation> = requests
        .iter()
        .map(|r| resident.generate(r).unwrap())
        .collect();
    let threads: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let low = Arc::clone(&low);
            thread::spawn(move || low.generate(&request).unwrap())
        })
        .collect();
    for (index, handle) in threads.into_iter().enumerate() {
        assert_same(
            &format!("request {index}"),
            &expected[index],
            &handle.join().unwrap(),
        );
    }
}

/// Per-request settings take effect, and leave the model's defaults alone for the next request.
#[test]
fn request_settings_apply_to_that_request_only() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    let base = GenerationRequest::new("a red fox").steps(4).seed(5);
    let plain = sd.generate(&base).unwrap();
    for (what, changed) in [
        ("scheduler", base.clone().scheduler("Euler a")),
        ("clip skip", base.clone().clip_skip(2)),
        ("eta", base.clone().scheduler("DDIM").eta(1.0)),
        (
            "karras",
            base.clone().scheduler("Euler").karras_sigmas(true),
        ),
    ] {
        let other = sd.generate(&changed).unwrap();
        assert!(other.latents != plain.latents, "{what} changed nothing");
        let again = sd.generate(&base).unwrap();
        assert_same(&format!("after a {what} request"), &plain, &again);
    }
    assert_eq!(sd.scheduler_for(&base), sd.default_scheduler());
    assert_eq!(sd.clip_skip_for(&base), 1);
    assert_eq!(sd.prompt_mode_for(&base), PromptMode::A1111);
}

/// Settings a request cannot have fail with a typed error naming the setting, before any work.
#[test]
fn bad_request_settings_are_refused_by_name() {
    let sd = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    let base = GenerationRequest::new("a red fox").steps(2);
    for (field, request) in [
        ("Euler z", base.clone().scheduler("Euler z")),
        ("clip_skip", base.clone().clip_skip(0)),
        ("clip_skip", base.clone().clip_skip(99)),
        ("eta", base.clone().scheduler("DDIM").eta(f32::NAN)),
        ("eta", base.clone().scheduler("DDIM").eta(-1.0)),
        (
            "karras_sigmas",
            base.clone().scheduler("DDIM").karras_sigmas(true),
        ),
    ] {
        let err = sd.generate(&request).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
}
