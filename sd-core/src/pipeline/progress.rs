//! What a generation reports after each model evaluation, and how a caller stops it.

use ndarray::Axis;

use super::image::RgbImage;
use crate::tensor::HostTensor;

/// The caller's answer to a progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Control {
    /// Go on with the next step.
    #[default]
    Continue,
    /// Stop now; the generation returns [`Error::Cancelled`](crate::Error::Cancelled).
    Cancel,
    /// Run no further step but decode the latents as they are (A1111's interrupt and skip:
    /// the client gets the partly denoised image).
    Finish,
}

/// One finished denoising step.
#[derive(Debug)]
pub struct StepProgress<'a> {
    /// Model evaluations done so far, 1-based.
    pub step: usize,
    /// Model evaluations this generation makes in all (fewer than the scheduler's timesteps
    /// for img2img; two per step for Heun). A sampler with error control (A1111's DPM
    /// adaptive) plans as it goes: then it counts the evaluations planned so far and grows.
    pub total: usize,
    /// The timestep just evaluated.
    pub timestep: f64,
    /// The latents after this step, `[batch, channels, h, w]` (unscaled: as the scheduler holds
    /// them).
    pub latents: &'a HostTensor,
}

/// SD 1.x latent channels → RGB: a fixed linear map fitted to the VAE's decodings (the
/// approximation ComfyUI and others use for live previews). Rows are latent channels.
const LATENT_RGB_FACTORS: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

impl StepProgress<'_> {
    /// A cheap look at image `index` of the batch, at latent resolution (one pixel per latent),
    /// from a fixed linear projection of its latents; `None` unless the latents have SD 1.x's
    /// 4 channels, or when `index` is past the batch.
    pub fn preview(&self, index: usize) -> Option<RgbImage> {
        preview(self.latents, index)
    }
}

/// See [`StepProgress::preview`].
pub fn preview(latents: &HostTensor, index: usize) -> Option<RgbImage> {
    let &[batch, channels, h, w] = latents.shape() else {
        return None;
    };
    if channels != LATENT_RGB_FACTORS.len() || index >= batch {
        return None;
    }
    let image = latents.index_axis(Axis(0), index);
    let mut pixels = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            let mut rgb = [0f32; 3];
            for (c, factors) in LATENT_RGB_FACTORS.iter().enumerate() {
                let latent = image[[c, y, x]];
                for (out, factor) in rgb.iter_mut().zip(factors) {
                    *out += latent * factor;
                }
            }
            for value in rgb {
                let unit = ((value + 1.0) * 0.5).clamp(0.0, 1.0);
                pixels.push((unit * 255.0).round() as u8);
            }
        }
    }
    RgbImage::new(w, h, pixels).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    #[test]
    fn preview_is_one_pixel_per_latent() {
        let latents = HostTensor::zeros(vec![2, 4, 3, 5]);
        let image = preview(&latents, 1).unwrap();
        assert_eq!((image.width(), image.height()), (5, 3));
        // Zero latents project to mid grey.
        assert!(image.pixels().iter().all(|&p| p == 128));
        assert!(preview(&latents, 2).is_none());
        assert!(preview(&HostTensor::zeros(vec![1, 3, 2, 2]), 0).is_none());
    }
}
