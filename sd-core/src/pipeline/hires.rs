//! A1111's hires fix for txt2img: a first pass at the request's size, its latents resized by a
//! [`LatentUpscaler`], then a second, img2img-style pass from those latents at the larger size.
//!
//! As A1111's `StableDiffusionProcessingTxt2Img` runs it (`modules/processing.py`, 1.10):
//! - the target size is `int(side · scale)`, or `hr_resize_x × hr_resize_y`; with both resize
//!   sides given and another aspect ratio, the latents are resized to cover the target and the
//!   excess is cut evenly from both ends (`truncate_x/y`);
//! - the second pass takes `steps` (0: the request's steps) and runs them as the last `steps` of
//!   a schedule of `⌊steps / min(denoising_strength, 0.999)⌋` steps (its
//!   `setup_img2img_steps` when the steps are given), starting from the resized latents noised
//!   to that point (no VAE round trip);
//! - its noise comes from fresh generators seeded with the image seeds (A1111 makes a new
//!   `ImageRNG` for the pass), drawn as a txt2img pass draws them.
//!
//! ```no_run
//! # use sd_core::pipeline::{GenerationRequest, HiresFix, LatentUpscaler};
//! let request = GenerationRequest::new("a lighthouse at dusk")
//!     .size(512, 512)
//!     .steps(20)
//!     .hires(HiresFix::scale(2.0).steps(10).denoising_strength(0.5).upscaler(LatentUpscaler::Bicubic));
//! // pipeline.generate(&request, …) makes a 1024×1024 image: 20 steps at 512², 10 at 1024².
//! ```

use super::upscale::LatentUpscaler;
use crate::error::{Error, Result};

/// The size the hires pass works at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HiresTarget {
    /// Both sides times this factor (A1111's `hr_scale`, `Hires upscale`).
    Scale(f64),
    /// A size in pixels (A1111's `hr_resize_x`/`hr_resize_y`, `Hires resize`); a side of 0
    /// follows the other side and the first pass's aspect ratio.
    Resize { width: usize, height: usize },
}

/// The hires fix of a txt2img request.
#[derive(Debug, Clone, PartialEq)]
pub struct HiresFix {
    pub target: HiresTarget,
    /// Steps of the second pass; 0: the request's steps (A1111's `hr_second_pass_steps`).
    pub steps: usize,
    /// How far the resized latents are noised back, in (0, 1] (A1111's `denoising_strength`).
    pub denoising_strength: f64,
    pub upscaler: LatentUpscaler,
}

impl HiresFix {
    /// Scale both sides by `factor`, with A1111's defaults: the first pass's steps, denoising
    /// strength 0.7 (its UI default), the `Latent` (bilinear) upscaler.
    pub fn scale(factor: f64) -> Self {
        Self {
            target: HiresTarget::Scale(factor),
            steps: 0,
            denoising_strength: 0.7,
            upscaler: LatentUpscaler::default(),
        }
    }

    /// Resize to `width × height` pixels (a side of 0 keeps the first pass's aspect ratio).
    pub fn resize(width: usize, height: usize) -> Self {
        Self {
            target: HiresTarget::Resize { width, height },
            ..Self::scale(1.0)
        }
    }

    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    pub fn denoising_strength(mut self, strength: f64) -> Self {
        self.denoising_strength = strength;
        self
    }

    pub fn upscaler(mut self, upscaler: LatentUpscaler) -> Self {
        self.upscaler = upscaler;
        self
    }

    /// The second pass's steps given the request's `steps` (0 means "the same").
    pub fn second_pass_steps(&self, steps: usize) -> usize {
        if self.steps == 0 { steps } else { self.steps }
    }

    /// A1111's schedule for the second pass: `(schedule_steps, kept)`, where the pass runs the
    /// last `kept` of `schedule_steps` inference steps.
    pub fn schedule(&self, steps: usize) -> (usize, usize) {
        let kept = self.second_pass_steps(steps);
        // Python's int(kept / min(strength, 0.999)).
        let schedule = (kept as f64 / self.denoising_strength.min(0.999)) as usize;
        (schedule.max(kept), kept)
    }

    /// The sizes of the hires pass for a first pass of `width × height` with latents
    /// `factor` pixels apart, by A1111's rules.
    pub fn sizes(&self, width: usize, height: usize, factor: usize) -> Result<HiresSizes> {
        self.check()?;
        let (upscaled, target) = match self.target {
            HiresTarget::Scale(scale) => {
                let side = |pixels: usize| (pixels as f64 * scale) as usize;
                let size = (side(width), side(height));
                (size, size)
            }
            HiresTarget::Resize {
                width: 0,
                height: 0,
            } => {
                return Err(Error::invalid_argument(
                    "hires resize",
                    "give a width, a height or both",
                ));
            }
            HiresTarget::Resize {
                width: to_x,
                height: 0,
            } => {
                let size = (to_x, to_x * height / width);
                (size, size)
            }
            HiresTarget::Resize {
                width: 0,
                height: to_y,
            } => {
                let size = (to_y * width / height, to_y);
                (size, size)
            }
            HiresTarget::Resize {
                width: to_x,
                height: to_y,
            } => {
                // Cover the target keeping the aspect ratio; the excess is cropped.
                let covering = if (width as f64 / height as f64) < (to_x as f64 / to_y as f64) {
                    (to_x, to_x * height / width)
                } else {
                    (to_y * width / height, to_y)
                };
                (covering, (to_x, to_y))
            }
        };
        let latent = (upscaled.0 / factor, upscaled.1 / factor);
        let crop = (
            upscaled.0.saturating_sub(target.0) / factor,
            upscaled.1.saturating_sub(target.1) / factor,
        );
        if latent.0 <= crop.0 || latent.1 <= crop.1 {
            return Err(Error::invalid_argument(
                "hires size",
                format!("{}×{} leaves no latents to denoise", target.0, target.1),
            ));
        }
        Ok(HiresSizes {
            upscaled_latent: latent,
            crop,
        })
    }

    fn check(&self) -> Result<()> {
        if let HiresTarget::Scale(scale) = self.target
            && !(scale.is_finite() && scale > 0.0)
        {
            return Err(Error::invalid_argument(
                "hires scale",
                format!("must be a positive number, got {scale}"),
            ));
        }
        let strength = self.denoising_strength;
        if strength.is_nan() || strength <= 0.0 || strength > 1.0 {
            return Err(Error::invalid_argument(
                "hires denoising strength",
                format!("must be in (0, 1], got {strength}"),
            ));
        }
        Ok(())
    }
}

/// Where the hires pass's latents come from: resized to `upscaled_latent`, then cropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiresSizes {
    /// `(width, height)` in latents that the first pass's latents are resized to.
    pub upscaled_latent: (usize, usize),
    /// `(x, y)` latents cut away in all: half (rounded down) from the left/top, the rest from
    /// the right/bottom (A1111's `truncate_x/y // 2` and `(truncate + 1) // 2`).
    pub crop: (usize, usize),
}

impl HiresSizes {
    /// `(width, height)` of the second pass's latents.
    pub fn latent(&self) -> (usize, usize) {
        (
            self.upscaled_latent.0 - self.crop.0,
            self.upscaled_latent.1 - self.crop.1,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    #[test]
    fn scale_truncates_like_python_int() {
        let sizes = HiresFix::scale(1.5).sizes(512, 328, 8).unwrap();
        // int(328 · 1.5) = 492, 492 // 8 = 61.
        assert_eq!(sizes.upscaled_latent, (96, 61));
        assert_eq!(sizes.crop, (0, 0));
    }

    #[test]
    fn one_resize_side_follows_the_aspect_ratio() {
        let sizes = HiresFix::resize(1024, 0).sizes(512, 256, 8).unwrap();
        assert_eq!(sizes.latent(), (128, 64));
        let sizes = HiresFix::resize(0, 384).sizes(512, 256, 8).unwrap();
        assert_eq!(sizes.latent(), (96, 48));
    }

    #[test]
    fn both_resize_sides_cover_then_crop() {
        // 512² to 1024×768: resized to 1024² latents-wise, 32 latent rows cut (16 + 16).
        let sizes = HiresFix::resize(1024, 768).sizes(512, 512, 8).unwrap();
        assert_eq!(sizes.upscaled_latent, (128, 128));
        assert_eq!(sizes.crop, (0, 32));
        assert_eq!(sizes.latent(), (128, 96));
    }

    #[test]
    fn second_pass_schedule_is_a1111s() {
        // 10 steps at 0.7: int(10 / 0.7) = 14 scheduled, the last 10 run.
        assert_eq!(HiresFix::scale(2.0).steps(10).schedule(20), (14, 10));
        // 0 steps: the first pass's count; strength 1 is capped at 0.999.
        assert_eq!(
            HiresFix::scale(2.0).denoising_strength(1.0).schedule(20),
            (20, 20)
        );
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let text = |fix: HiresFix| fix.sizes(512, 512, 8).unwrap_err().to_string();
        assert!(text(HiresFix::scale(f64::NAN)).contains("hires scale"));
        assert!(text(HiresFix::scale(2.0).denoising_strength(0.0)).contains("denoising"));
        assert!(text(HiresFix::resize(0, 0)).contains("hires resize"));
        assert!(text(HiresFix::scale(0.001)).contains("hires size"));
    }
}
