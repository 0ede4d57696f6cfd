//! Time and memory of full-size SD 1.5 UNet forward passes on the CPU backend (batch 2, 64×64
//! latents, f32), on the random weights of `python tools/full_size_goldens.py write`.
//!
//!     cargo run --release -p sd-unet --example unet_forward -- [DIR] [--runs N]
//!     /usr/bin/time -v target/release/examples/unet_forward        # whole-process peak RSS
//!
//! Prints the load time, each forward's wall and CPU time, the resident set after loading and the peak
//! during the forward passes (`VmHWM` reset once the model is built and the weight files are
//! unmapped, so it counts the f32 weights plus activations).

use std::path::PathBuf;
use std::time::Instant;

use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;
use sd_core::{Backend, Denoiser, TorchGenerator};
use sd_testkit::process;
use sd_unet::{UNet2DConditionModel, UNetConfig};

fn main() -> sd_core::Result<()> {
    let mut dir = sd_testkit::full_size_dir();
    let mut runs = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| sd_core::Error::invalid_argument("--runs", "expects a count"))?
            }
            _ => dir = PathBuf::from(arg),
        }
    }
    let backend = CpuBackend::new();
    let start = Instant::now();
    let store = WeightStore::open(&dir)?;
    let unet = UNet2DConditionModel::from_store(&backend, UNetConfig::sd15(4)?, &store)?;
    drop(store);
    println!("load: {:.1} s", start.elapsed().as_secs_f64());
    println!(
        "resident after load: {}",
        process::gib(process::current_bytes())
    );

    let mut generator = TorchGenerator::new(0);
    let latents = backend.upload(&generator.randn(&[2, 4, 64, 64]))?;
    let context = backend.upload(&generator.randn(&[2, 77, 768]))?;
    process::reset();
    for run in 0..runs {
        let (start, cpu_start) = (Instant::now(), process::cpu_seconds());
        let out = unet.predict_noise(&backend, &latents, 500.0, &context)?;
        drop(out);
        let cpu = process::cpu_seconds()
            .zip(cpu_start)
            .map(|(end, start)| end - start);
        println!(
            "forward {run}: {:.2} s wall, {:.1} s CPU (batch 2, 64x64, f32, {} threads)",
            start.elapsed().as_secs_f64(),
            cpu.unwrap_or(f64::NAN),
            rayon_threads()
        );
    }
    println!(
        "peak RSS during forward: {}",
        process::gib(process::peak_bytes())
    );
    Ok(())
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism().map_or("?".into(), |n| n.to_string())
    })
}
