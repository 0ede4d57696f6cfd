//! `sd bench`: full-size SD 1.5 (UNet 860M, VAE 84M, CLIP 123M parameters) with seeded random
//! weights — no download — timed component by component: CLIP on `[negative, prompt]`, one UNet
//! step at batch 2 (classifier-free guidance at 512×512) and one 512×512 VAE decode. Reports the
//! median and the fastest of `--runs` runs and the process's peak resident memory.

use std::time::{Duration, Instant};

use sd_clip::{ClipTextConfig, ClipTextEncoder, ClipTextTransformer, ClipTokenizer};
use sd_core::weights::WeightStore;
use sd_core::{Backend, Denoiser, Error, LatentCodec, Result, TextEncoder, TorchGenerator};
use sd_unet::{UNet2DConditionModel, UNetConfig};
use sd_vae::{AutoencoderKL, VaeConfig};

use crate::backend::with_backend;
use crate::cli::BenchArgs;

pub fn run(args: BenchArgs) -> Result<()> {
    if args.runs == 0 {
        return Err(Error::invalid_argument("--runs", "must be at least 1"));
    }
    with_backend!(args.backend, |backend| bench(backend, &args))
}

/// One timed row of the table.
struct Row {
    what: &'static str,
    input: String,
    times: Vec<Duration>,
}

fn bench<B: Backend>(b: B, args: &BenchArgs) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "sd bench: SD 1.5 architecture, random weights (seed {}), backend {} ({threads} threads), median of {} runs",
        args.seed,
        b.name(),
        args.runs
    );
    let store = WeightStore::synthetic(args.seed);
    let (text, clip_load) = timed(|| {
        let model = ClipTextTransformer::load(&b, &store.text_encoder()?, ClipTextConfig::sd15())?;
        Ok(ClipTextEncoder::new(model, ClipTokenizer::sd15()?))
    })?;
    let (unet, unet_load) =
        timed(|| UNet2DConditionModel::from_store(&b, UNetConfig::sd15(4)?, &store))?;
    let (vae, vae_load) = timed(|| AutoencoderKL::from_store(&b, VaeConfig::sd15()?, &store))?;
    println!(
        "built in {:.1} s (CLIP {:.1} s, UNet {:.1} s, VAE {:.1} s); resident: {}",
        (clip_load + unet_load + vae_load).as_secs_f64(),
        clip_load.as_secs_f64(),
        unet_load.as_secs_f64(),
        vae_load.as_secs_f64(),
        memory("VmRSS")
    );

    let prompts = ["", "a photograph of an astronaut riding a horse"];
    let mut generator = TorchGenerator::new(args.seed);
    let latents = b.upload(&generator.randn(&[2, 4, 64, 64]))?;
    let single = b.upload(&generator.randn(&[1, 4, 64, 64]))?;
    let context = text.encode(&b, &prompts)?;

    let rows = [
        Row {
            what: "CLIP text encoder",
            input: "2 prompts × 77 tokens".into(),
            times: repeat(args.runs, || text.encode(&b, &prompts).map(drop))?,
        },
        Row {
            what: "UNet step",
            input: "batch 2, 4×64×64 latents".into(),
            times: repeat(args.runs, || {
                unet.predict_noise(&b, &latents, 500.0, &context).map(drop)
            })?,
        },
        Row {
            what: "VAE decode",
            input: "4×64×64 → 3×512×512".into(),
            times: repeat(args.runs, || vae.decode(&b, &single).map(drop))?,
        },
    ];
    println!();
    println!("| component | input | median | fastest |");
    println!("|---|---|---|---|");
    for row in &rows {
        let mut sorted = row.times.clone();
        sorted.sort();
        println!(
            "| {} | {} | {:.3} s | {:.3} s |",
            row.what,
            row.input,
            sorted[sorted.len() / 2].as_secs_f64(),
            sorted[0].as_secs_f64()
        );
    }
    println!();
    println!("peak memory (VmHWM): {}", memory("VmHWM"));
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let value = f()?;
    Ok((value, start.elapsed()))
}

fn repeat(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    (0..runs).map(|_| timed(&mut f).map(|(_, t)| t)).collect()
}

/// A memory line of /proc/self/status (Linux), as GiB; "n/a" elsewhere.
fn memory(field: &str) -> String {
    let kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        });
    match kib {
        Some(kib) => format!("{:.2} GiB", kib as f64 / (1024.0 * 1024.0)),
        None => "n/a".to_string(),
    }
}
