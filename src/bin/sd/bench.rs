//! `sd bench`: full-size SD 1.5 (UNet 860M, VAE 84M, CLIP 123M parameters) with seeded random
//! weights — no download — timed component by component (`--component`): CLIP on
//! `[negative, prompt]`, one UNet step at batch 2 (classifier-free guidance at 512×512) or 1,
//! a 512×512 VAE decode or encode, or a whole txt2img generation (`--size` sets the latent side,
//! `--batch` the images per call, for how cost grows). Reports the median and the
//! fastest of `--runs` runs (after one untimed warm-up) and the process's peak resident memory;
//! `--profile` adds where the time went, op kind by op kind. tools/bench_torch.py times the
//! same work in PyTorch and tools/bench_compare.py runs both side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_clip::{ClipTextConfig, ClipTextEncoder, ClipTextTransformer, ClipTokenizer};
use sd_core::cpu::CpuFeatures;
use sd_core::profile::{OpTimes, Profiled};
use sd_core::weights::{Variant, WeightStore};
use sd_core::{Backend, Denoiser, Error, GenerationRequest, LatentCodec, Result, TorchGenerator};
use sd_unet::{UNet2DConditionModel, UNetConfig};
use sd_vae::{AutoencoderKL, VaeConfig};
use stable_diffusion::configs::ModelConfigs;
use stable_diffusion::{LoadOptions, StableDiffusion};

use crate::backend::with_backend;
use crate::cli::{BenchArgs, BenchComponent};

const PROMPTS: [&str; 2] = ["", "a photograph of an astronaut riding a horse"];

pub fn run(args: BenchArgs) -> Result<()> {
    if args.runs == 0 {
        return Err(Error::invalid_argument("--runs", "must be at least 1"));
    }
    if args.steps == 0 {
        return Err(Error::invalid_argument("--steps", "must be at least 1"));
    }
    if let Some(path) = &args.save_image {
        if !args.component.contains(&BenchComponent::Txt2img) {
            return Err(Error::invalid_argument(
                "--save-image",
                "only the txt2img component makes an image: add --component txt2img",
            ));
        }
        stable_diffusion::output::check_outputs(std::slice::from_ref(path), &[])?;
    }
    with_backend!(args.backend, args.precision, |backend| {
        if args.profile {
            let profiled = Profiled::new(backend);
            let times = profiled.times();
            bench(profiled, &args, Some(&times))
        } else {
            bench(backend, &args, None)
        }
    })
}

/// One component's measurements.
struct Row {
    component: BenchComponent,
    input: String,
    times: Vec<Duration>,
    /// Per-op times of the timed runs (with --profile).
    profile: Option<Vec<sd_core::profile::OpTime>>,
}

fn bench<B: Backend>(b: B, args: &BenchArgs, profile: Option<&OpTimes>) -> Result<()> {
    let threads = rayon_threads();
    if !args.json {
        println!(
            "sd bench: SD 1.5 architecture, random weights (seed {}), backend {} ({threads} threads, CPU features: {}), median of {} runs",
            args.seed,
            b.name(),
            CpuFeatures::get().describe(),
            args.runs
        );
    }
    let backend_name = b.name();
    let store = Arc::new(WeightStore::synthetic(args.seed));
    let mut rows = Vec::new();
    let mut backend = Some(b);
    for &component in &args.component {
        let row = if component == BenchComponent::Txt2img {
            // The pipeline owns its backend, so txt2img takes it (and must come last).
            let b = backend.take().ok_or_else(|| {
                Error::invalid_argument("--component", "txt2img must be the last component")
            })?;
            measure_txt2img(b, Arc::clone(&store), args, profile)?
        } else {
            let b = backend.as_ref().ok_or_else(|| {
                Error::invalid_argument("--component", "txt2img must be the last component")
            })?;
            measure(b, component, &store, args, profile)?
        };
        if args.json {
            println!("{}", json_line(&row, args, threads, &backend_name));
        }
        rows.push(row);
    }
    if !args.json {
        print_table(&rows);
    }
    Ok(())
}

/// Build `component`'s model, run it once untimed and `args.runs` times timed, drop it.
fn measure<B: Backend>(
    b: &B,
    component: BenchComponent,
    store: &WeightStore,
    args: &BenchArgs,
    profile: Option<&OpTimes>,
) -> Result<Row> {
    let mut generator = TorchGenerator::new(args.seed);
    let side = args.size as usize;
    let batch = args.batch.map_or(1, |b| b as usize);
    let (input, work): (String, Box<dyn Fn() -> Result<()> + '_>) = match component {
        BenchComponent::Clip => {
            let model =
                ClipTextTransformer::load(b, &store.text_encoder()?, ClipTextConfig::sd15())?;
            let text = ClipTextEncoder::new(model, ClipTokenizer::sd15()?);
            (
                "2 prompts × 77 tokens".to_string(),
                Box::new(move || text.encode_prompts(b, &PROMPTS).map(drop)),
            )
        }
        BenchComponent::Unet | BenchComponent::UnetB1 => {
            let unet = UNet2DConditionModel::from_store(b, UNetConfig::sd15(4)?, store)?;
            let batch = match (args.batch, component) {
                (Some(batch), _) => batch as usize,
                (None, BenchComponent::Unet) => 2,
                (None, _) => 1,
            };
            let latents = b.upload(&generator.randn(&[batch, 4, side, side]))?;
            let context = b.upload(&generator.randn(&[batch, 77, 768]))?;
            (
                format!("batch {batch}, 4×{side}×{side} latents"),
                Box::new(move || unet.predict_noise(b, &latents, 500.0, &context).map(drop)),
            )
        }
        BenchComponent::VaeDecode | BenchComponent::VaeEncode => {
            let vae = AutoencoderKL::from_store(b, VaeConfig::sd15()?, store)?;
            let pixels = 8 * side;
            if component == BenchComponent::VaeDecode {
                let latents = b.upload(&generator.randn(&[batch, 4, side, side]))?;
                (
                    format!("{batch} × 4×{side}×{side} → 3×{pixels}×{pixels}"),
                    Box::new(move || vae.decode(b, &latents).map(drop)),
                )
            } else {
                let image = generator.randn(&[batch, 3, pixels, pixels]).mapv(f32::tanh);
                let image = b.upload(&image)?;
                (
                    format!("{batch} × 3×{pixels}×{pixels} → 4×{side}×{side}"),
                    Box::new(move || vae.encode(b, &image).map(drop)),
                )
            }
        }
        BenchComponent::Txt2img => {
            return Err(Error::invalid_argument(
                "--component",
                "txt2img is measured whole",
            ));
        }
    };
    work()?;
    if let Some(times) = profile {
        times.reset();
    }
    let times = repeat(args.runs, &*work)?;
    Ok(Row {
        component,
        input,
        times,
        profile: profile.map(OpTimes::report),
    })
}

/// A whole generation at 512×512 on the full-size random model: load, encode, denoise, decode.
fn measure_txt2img<B: Backend>(
    b: B,
    store: Arc<WeightStore>,
    args: &BenchArgs,
    profile: Option<&OpTimes>,
) -> Result<Row> {
    let configs = ModelConfigs::sd15(Variant::Standard)?;
    let options = LoadOptions::default().low_memory(args.low_memory);
    let sd = StableDiffusion::from_store(b, store, configs, &options)?;
    let (pixels, batch) = (8 * args.size as usize, args.batch.map_or(1, |b| b as usize));
    let request = GenerationRequest::new(PROMPTS[1])
        .scheduler("PNDM")
        .steps(args.steps)
        .seed(args.seed)
        .size(pixels, pixels)
        .batch_size(batch);
    if let Some(times) = profile {
        times.reset();
    }
    let last_image = std::sync::Mutex::new(None);
    let times = repeat(args.runs, || {
        let generation = sd.generate(&request)?;
        *last_image.lock().unwrap_or_else(|e| e.into_inner()) =
            generation.images.into_iter().next();
        Ok(())
    })?;
    if let (Some(path), Some(image)) = (&args.save_image, last_image.into_inner().ok().flatten()) {
        stable_diffusion::png::write_png(path, &image, None)?;
    }
    Ok(Row {
        component: BenchComponent::Txt2img,
        input: format!(
            "{batch} × {pixels}×{pixels}, PNDM, guidance 7.5{}",
            if args.low_memory { ", low memory" } else { "" }
        ),
        times,
        profile: profile.map(OpTimes::report),
    })
}

fn repeat(runs: usize, f: impl Fn() -> Result<()>) -> Result<Vec<Duration>> {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f().map(|()| start.elapsed())
        })
        .collect()
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| component | input | median | fastest |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.3} s | {:.3} s |",
            name(row.component),
            row.input,
            median(&row.times).as_secs_f64(),
            row.times.iter().min().map_or(0.0, Duration::as_secs_f64),
        );
    }
    println!();
    println!("peak memory (VmHWM): {}", gib_text(peak_rss_gib()));
    for row in rows {
        let Some(ops) = &row.profile else { continue };
        let total: f64 = ops.iter().map(|op| op.total.as_secs_f64()).sum();
        println!();
        println!(
            "{} — time per op kind over {} runs (total {total:.2} s in ops):",
            name(row.component),
            row.times.len()
        );
        println!("| op | calls/run | s/run | share |");
        println!("|---|---|---|---|");
        let runs = row.times.len() as f64;
        for op in ops {
            let secs = op.total.as_secs_f64();
            println!(
                "| {} | {} | {:.3} | {:.1} % |",
                op.op,
                op.calls as f64 / runs,
                secs / runs,
                100.0 * secs / total.max(f64::MIN_POSITIVE)
            );
        }
    }
}

fn json_line(row: &Row, args: &BenchArgs, threads: usize, backend: &str) -> String {
    let times: Vec<f64> = row.times.iter().map(Duration::as_secs_f64).collect();
    let mut value = serde_json::json!({
        "component": name(row.component),
        "input": row.input,
        "precision": format!("{:?}", args.precision).to_lowercase(),
        "backend": backend,
        "cpu_features": CpuFeatures::get().describe(),
        "times": times,
        "median": median(&row.times).as_secs_f64(),
        "peak_rss_gib": peak_rss_gib(),
        "threads": threads,
        "low_memory": args.low_memory,
    });
    if let Some(ops) = &row.profile {
        value["profile"] = ops
            .iter()
            .map(|op| serde_json::json!({"op": op.op, "calls": op.calls, "seconds": op.total.as_secs_f64()}))
            .collect();
    }
    value.to_string()
}

/// The component's command-line name.
fn name(component: BenchComponent) -> String {
    use clap::ValueEnum;
    component
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(0)
}

/// The process's peak resident memory (VmHWM in /proc/self/status, Linux), in GiB.
fn peak_rss_gib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix("VmHWM:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib as f64 / (1024.0 * 1024.0))
    })
}

fn gib_text(gib: Option<f64>) -> String {
    gib.map_or_else(|| "n/a".to_string(), |g| format!("{g:.2} GiB"))
}
