//! The shortest img2img: start from a picture, keep 40 % of it, save a PNG.
//!
//!     cargo run --release --example img2img -- [MODEL] [INIT.png] ["prompt"]
//!
//! Defaults: the tiny test model in fixtures/tiny-sd and fixtures/goldens/init_image.png.

use stable_diffusion::png::{read_rgb, write_png};
use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};

fn main() -> stable_diffusion::Result<()> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| format!("{root}/fixtures/tiny-sd"));
    let init = args
        .next()
        .unwrap_or_else(|| format!("{root}/fixtures/goldens/init_image.png"));
    let prompt = args
        .next()
        .unwrap_or_else(|| "a watercolour of the same scene".to_string());

    let sd = StableDiffusion::load(&model, LoadOptions::default())?;
    // Strength 0.6: skip the first 40 % of the schedule and start from the noised picture.
    let request = GenerationRequest::new(prompt)
        .init_image(read_rgb(&init)?, 0.6)
        .steps(25)
        .seed(7);
    let generation = sd.generate(&request)?;
    write_png("img2img.png", &generation.images[0], None)?;
    println!("wrote img2img.png");
    Ok(())
}
