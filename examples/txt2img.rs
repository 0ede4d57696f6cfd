//! The shortest txt2img: load a model, pick a sampler, generate, save a PNG.
//!
//!     cargo run --release --example txt2img -- [MODEL] ["prompt"]
//!
//! MODEL is a diffusers folder or an SD 1.x `.safetensors`; without it the tiny random test
//! model in fixtures/tiny-sd runs (its image is noise, but every step is the real pipeline).

use stable_diffusion::png::write_png;
use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};

fn main() -> stable_diffusion::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-sd").to_string());
    let prompt = args
        .next()
        .unwrap_or_else(|| "a lighthouse on a cliff at dusk, oil painting".to_string());

    let sd = StableDiffusion::load(&model, LoadOptions::default())?;
    let request = GenerationRequest::new(prompt)
        .negative_prompt("blurry, low quality")
        .scheduler("DPM++ 2M Karras")
        .steps(20)
        .guidance_scale(7.5)
        .seed(42);
    let generation = sd.generate(&request)?;
    write_png("txt2img.png", &generation.images[0], None)?;
    println!("wrote txt2img.png");
    Ok(())
}
