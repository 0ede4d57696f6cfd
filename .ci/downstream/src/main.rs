//! A downstream program as a crates.io user would write it: load a model once, share it between
//! two threads through an `Arc`, generate with a different sampler and seed on each, write PNGs.
//!
//! ```text
//! sd-downstream MODEL [OUT_DIR]     # MODEL: an SD 1.5 .safetensors file or a diffusers folder
//! ```
//!
//! Exits non-zero when anything fails: a load or generation error, a panicking thread, or
//! results that don't differ the way the two requests do.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use stable_diffusion::{
    Error, Generation, GenerationRequest, LoadOptions, Result, StableDiffusion,
};

fn main() -> ExitCode {
    let (a, b) = match run() {
        Ok(generations) => generations,
        Err(error) => {
            eprintln!("sd-downstream: error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if a.seeds != [1] || b.seeds != [2] || a.images.len() != 1 || b.images.len() != 1 {
        eprintln!(
            "sd-downstream: error: seeds {:?} and {:?}, expected [1] and [2] with one image each",
            a.seeds, b.seeds
        );
        return ExitCode::FAILURE;
    }
    if a.images[0].pixels() == b.images[0].pixels() {
        eprintln!("sd-downstream: error: different samplers and seeds gave the same image");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Loads the model, runs the two requests on two threads, writes their PNGs.
fn run() -> Result<(Generation, Generation)> {
    let mut args = std::env::args_os().skip(1);
    let model = args
        .next()
        .map(PathBuf::from)
        .ok_or_else(|| Error::invalid_argument("MODEL", "usage: sd-downstream MODEL [OUT_DIR]"))?;
    let out_dir = args
        .next()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
        path: out_dir.clone(),
        source,
    })?;

    let sd = Arc::new(StableDiffusion::load(&model, LoadOptions::default())?);
    let requests = [
        ("euler-a", "Euler a", 1),
        ("dpmpp-2m-karras", "DPM++ 2M Karras", 2),
    ]
    .map(|(file, sampler, seed)| {
        let request = GenerationRequest::new("a fox")
            .scheduler(sampler)
            .steps(4)
            .seed(seed);
        (out_dir.join(format!("{file}.png")), request)
    });

    let workers = requests.map(|(path, request)| {
        let sd = Arc::clone(&sd);
        thread::spawn(move || -> Result<Generation> {
            let generation = sd.generate(&request)?;
            stable_diffusion::png::write_png(&path, &generation.images[0], None)?;
            println!(
                "{}: {} with seed {:?}, {}x{}",
                path.display(),
                sd.scheduler_for(&request),
                generation.seeds,
                generation.images[0].width(),
                generation.images[0].height(),
            );
            Ok(generation)
        })
    });
    // A panic in a worker goes on here: the process exits with 101.
    let [a, b] = workers.map(|worker| {
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    Ok((a?, b?))
}
