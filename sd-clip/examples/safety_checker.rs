//! Time and memory of SD 1.5's full-size safety checker (CLIP ViT-L/14 at 224 px, projection
//! 768) on one 512×512 image, CPU backend, f32, with seeded random weights (no download):
//!
//!     cargo run --release -p sd-clip --example safety_checker
//!
//! Prints the load time, the resident set after loading, and the check's wall time, CPU time
//! and peak resident set (`VmHWM` reset after loading): preprocessing (Pillow-exact bicubic
//! resize 512 → 224, crop, normalise), the vision tower, and the scores.

use std::time::Instant;

use sd_clip::{ClipImageProcessor, ClipVisionConfig, SafetyChecker};
use sd_core::cpu::CpuBackend;
use sd_core::pipeline::RgbImage;
use sd_core::weights::{Component, WeightStore};
use sd_testkit::process;

fn main() -> sd_core::Result<()> {
    let backend = CpuBackend::new();
    let store = WeightStore::synthetic(0);
    let start = Instant::now();
    let checker = SafetyChecker::from_weights(
        &backend,
        &store.component(Component::SafetyChecker)?,
        ClipVisionConfig::vit_l14(),
        768,
        ClipImageProcessor::default(),
    )?;
    println!(
        "load (random weights): {:.2} s, resident after load: {}",
        start.elapsed().as_secs_f64(),
        process::gib(process::current_bytes())
    );
    // A 512² image with some structure (a gradient and a pattern), as a generation gives.
    let pixels: Vec<u8> = (0..512 * 512)
        .flat_map(|i| {
            let (x, y) = (i % 512, i / 512);
            [(x / 2) as u8, (y / 2) as u8, ((x ^ y) & 0xff) as u8]
        })
        .collect();
    let image = RgbImage::new(512, 512, pixels)?;
    process::reset();
    let (start, cpu_start) = (Instant::now(), process::cpu_seconds());
    let verdicts = checker.check(&backend, &[image])?;
    let cpu = process::cpu_seconds()
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    println!(
        "check 512x512: {:.2} s wall, {:.1} s CPU, flagged: {}",
        start.elapsed().as_secs_f64(),
        cpu.unwrap_or(f64::NAN),
        verdicts[0].flagged
    );
    println!(
        "peak RSS during the check: {}",
        process::gib(process::peak_bytes())
    );
    Ok(())
}
