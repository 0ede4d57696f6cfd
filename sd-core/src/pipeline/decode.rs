//! The final decode, latents → bytes, with the retry in f32.
//!
//! A VAE decode in reduced precision can overflow where the same weights in f32 do not: SD 1.5's
//! VAE is known to reach activations past f16's 65504 on GPUs (the "NaN VAE" users meet with
//! fp16), and a bf16 weight past bf16's largest finite value rounds to infinity. Writing such a
//! decode out would give a black image; instead the decode of that image is redone on the
//! backend's f32 twin ([`Backend::full_precision`]) with f32 weights, and the images that needed
//! it are listed in [`Generation::decoded_in_f32`](super::Generation::decoded_in_f32) so the
//! caller can say so. A decode that is not finite in f32 either stays an [`Error::NonFinite`].

use ndarray::{Axis, Slice};

use super::image::RgbImage;
use crate::backend::Backend;
use crate::components::LatentCodec;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// The images of a batch and which of them were decoded in f32.
pub(super) struct Decoded {
    pub images: Vec<RgbImage>,
    pub decoded_in_f32: Vec<usize>,
}

/// Decode every row of the final `latents` (in the scheduler's scale) after `steps` steps.
/// After the first overflow the remaining rows go straight to f32 (the same weights would
/// likely overflow again: one decode instead of two).
pub(super) fn decode_batch<B: Backend, V: LatentCodec<B>>(
    backend: &B,
    codec: &V,
    latents: &HostTensor,
    steps: usize,
) -> Result<Decoded> {
    let rows = latents.len_of(Axis(0));
    let mut images = Vec::with_capacity(rows);
    let mut decoded_in_f32 = Vec::new();
    let mut full: Option<B> = None;
    for row in 0..rows {
        let scaled = latents
            .slice_axis(Axis(0), Slice::from(row..row + 1))
            .mapv(|v| v / codec.scaling_factor());
        if full.is_none() {
            let image = backend.download(&codec.decode(backend, &backend.upload(&scaled)?)?)?;
            if is_finite(&image) {
                images.push(to_rgb(&image)?);
                continue;
            }
            full = backend.full_precision()?;
        }
        // This row's decode was not finite, or an earlier row's was.
        let Some(full) = &full else {
            // The backend computes in f32 already: nothing to redo.
            return Err(non_finite("decoded image", steps));
        };
        let Some(image) = codec.decode_full_precision(full, &full.upload(&scaled)?)? else {
            return Err(non_finite("decoded image", steps));
        };
        let image = full.download(&image)?;
        if !is_finite(&image) {
            return Err(non_finite("decoded image (redone in f32)", steps));
        }
        decoded_in_f32.push(row);
        images.push(to_rgb(&image)?);
    }
    Ok(Decoded {
        images,
        decoded_in_f32,
    })
}

fn is_finite(image: &HostTensor) -> bool {
    image.iter().all(|v| v.is_finite())
}

fn non_finite(stage: &'static str, steps: usize) -> Error {
    Error::NonFinite {
        stage,
        step: steps,
        total: steps,
    }
}

/// A decoded `[1, 3, h, w]` tensor → bytes.
fn to_rgb(image: &HostTensor) -> Result<RgbImage> {
    let &[1, 3, _, _] = image.shape() else {
        return Err(Error::shape(
            "vae decode",
            format!("expected [1, 3, h, w], found {:?}", image.shape()),
        ));
    };
    let image = image
        .index_axis(Axis(0), 0)
        .into_dimensionality()
        .map_err(|e| Error::shape("vae decode", e.to_string()))?;
    Ok(RgbImage::from_tensor(image))
}
