//! Time and memory of a full-size SD 1.5 VAE decode on the CPU backend (f32), on the random
//! weights of `python tools/full_size_goldens.py write`.
//!
//!     cargo run --release -p sd-vae --example vae_decode -- [--size 512] [--tiling auto|on|off] [DIR]
//!     /usr/bin/time -v target/release/examples/vae_decode --size 1024    # whole-process peak
//!
//! Prints the decode's wall and CPU time, the resident set after loading and the peak during the decode
//! (`VmHWM` reset once the model is built and the weight files unmapped).

use std::path::PathBuf;
use std::time::Instant;

use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;
use sd_core::{Backend, Error, LatentCodec, TensorInfo, TorchGenerator};
use sd_testkit::process;
use sd_vae::{AutoencoderKL, TileMode, VaeConfig};

fn main() -> sd_core::Result<()> {
    let mut dir = sd_testkit::full_size_dir();
    let mut size = 512;
    let mut tiling = "auto".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" => {
                size = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| Error::invalid_argument("--size", "expects pixels"))?
            }
            "--tiling" => {
                tiling = args
                    .next()
                    .ok_or_else(|| Error::invalid_argument("--tiling", "auto, on or off"))?
            }
            _ => dir = PathBuf::from(arg),
        }
    }
    let backend = CpuBackend::new();
    let store = WeightStore::open(&dir)?;
    let mut vae = AutoencoderKL::from_store(&backend, VaeConfig::sd15()?, &store)?;
    drop(store);
    let mode = match tiling.as_str() {
        "auto" => vae.tiling().mode,
        "on" => TileMode::On,
        "off" => TileMode::Off,
        other => {
            return Err(Error::invalid_argument(
                "--tiling",
                format!("{other:?}: auto, on or off"),
            ));
        }
    };
    vae.set_tiling(sd_vae::Tiling {
        mode,
        ..vae.tiling()
    });
    println!(
        "resident after load: {}",
        process::gib(process::current_bytes())
    );

    let f = vae.downscale_factor();
    let latents = backend.upload(&TorchGenerator::new(0).randn(&[1, 4, size / f, size / f]))?;
    process::reset();
    let (start, cpu_start) = (Instant::now(), process::cpu_seconds());
    let image = vae.decode(&backend, &latents)?;
    let cpu = process::cpu_seconds()
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    println!(
        "decode {size}x{size} (tiling {mode:?}, applies: {}): {:.2} s wall, {:.1} s CPU, output {:?}",
        vae.tiling().applies(size, size),
        start.elapsed().as_secs_f64(),
        cpu.unwrap_or(f64::NAN),
        image.shape()
    );
    println!(
        "peak RSS during decode: {}",
        process::gib(process::peak_bytes())
    );
    Ok(())
}
