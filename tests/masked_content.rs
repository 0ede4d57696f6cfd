//! A1111's "Masked content" (`inpainting_fill`) on an ordinary UNet with a mask, pinned by what
//! defines each mode: `latent nothing` and `latent noise` change only what starts under the mask
//! (the kept region ends as the image's latents, as with `original`), and `fill` is `original`
//! run on the image with its masked pixels filled in.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use ndarray::s;
use stable_diffusion::{GenerationRequest, GrayImage, LoadOptions, MaskedContent, RgbImage};
use support::{fixtures, load_tiny};

const SIDE: usize = 64;

fn init_image() -> RgbImage {
    let pixels = (0..SIDE * SIDE)
        .flat_map(|i| {
            let (x, y) = (i % SIDE, i / SIDE);
            [(x * 4) as u8, (y * 4) as u8, 100]
        })
        .collect();
    RgbImage::new(SIDE, SIDE, pixels).unwrap()
}

/// The left half is repainted.
fn left_half() -> GrayImage {
    let pixels = (0..SIDE * SIDE)
        .map(|i| if i % SIDE < SIDE / 2 { 255 } else { 0 })
        .collect();
    GrayImage::new(SIDE, SIDE, pixels).unwrap()
}

fn request(image: RgbImage, content: MaskedContent) -> GenerationRequest {
    GenerationRequest::new("a lighthouse")
        .steps(4)
        .seed(21)
        .scheduler("Euler a")
        .init_image(image, 0.6)
        .mask(left_half())
        .masked_content(content)
}

#[test]
fn latent_modes_change_only_the_masked_latents_and_fill_is_original_on_the_filled_image() {
    let model = load_tiny(&fixtures().join("tiny-sd"), LoadOptions::default());
    let run = |image: RgbImage, content| model.generate(&request(image, content)).unwrap();
    let original = run(init_image(), MaskedContent::Original);
    let latent_width = original.latents.shape()[3];
    let (masked, kept) = (
        s![.., .., .., ..latent_width / 2],
        s![.., .., .., latent_width / 2..],
    );
    for content in [MaskedContent::LatentNothing, MaskedContent::LatentNoise] {
        let other = run(init_image(), content);
        assert_eq!(
            other.latents.slice(kept),
            original.latents.slice(kept),
            "{content:?}: the kept half is the image's"
        );
        assert_ne!(
            other.latents.slice(masked),
            original.latents.slice(masked),
            "{content:?}: the masked half starts elsewhere"
        );
    }
    let nothing = run(init_image(), MaskedContent::LatentNothing);
    let noise = run(init_image(), MaskedContent::LatentNoise);
    assert_ne!(nothing.latents.slice(masked), noise.latents.slice(masked));

    let filled = init_image().fill_masked(&left_half()).unwrap();
    assert_eq!(
        run(init_image(), MaskedContent::Fill).images,
        run(filled, MaskedContent::Original).images
    );
}
