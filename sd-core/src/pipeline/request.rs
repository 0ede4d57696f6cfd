//! What to generate: [`GenerationRequest`], and its checks against a model's geometry.

use super::hires::HiresFix;
use super::image::{GrayImage, RgbImage};
use super::mask::MaskedContent;
use crate::components::{PromptMode, TextOptions};
use crate::error::{Error, Result};
use crate::rng::RngSource;

/// The largest image side accepted: far past SD 1.5's useful range, small enough that sizes
/// never overflow.
pub const MAX_SIDE: usize = 16384;

/// How the random numbers of a batch are seeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seeds {
    /// One generator for the whole batch: diffusers' `generator=torch.Generator("cpu").manual_seed(s)`
    /// with `num_images_per_prompt = batch`. Image `i` depends on the batch size.
    Single(u64),
    /// One generator per image: diffusers' `generator=[manual_seed(s) for s in seeds]`. In
    /// txt2img and img2img each image is then the image its seed gives alone.
    PerImage(Vec<u64>),
}

/// The sampler a request asks for. Every part left `None` takes the model's default, so one
/// loaded model serves requests with different samplers side by side.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SamplerSettings {
    /// A diffusers class name (`"EulerDiscreteScheduler"`) or an A1111 sampler name (`"Euler a"`,
    /// `"DPM++ 2M Karras"`); `None`: the model's default sampler.
    pub name: Option<String>,
    /// A1111's schedule type for an A1111 sampler name (`"Karras"`, `"sgm_uniform"`, …);
    /// `None` or `"Automatic"`: the sampler's own default.
    pub schedule_type: Option<String>,
    /// η of the samplers that take one; `None`: the sampler's default (DDIM 0, deterministic;
    /// A1111's ancestral samplers 1).
    pub eta: Option<f32>,
    /// Karras σ spacing on or off, for samplers that step in σ; `None`: what the name implies,
    /// else the model's scheduler config.
    pub karras_sigmas: Option<bool>,
    /// `scheduler_config.json` keys to change for this request, as (key, value) pairs applied in
    /// order (`("algorithm_type", "sde-dpmsolver++")`, `("use_karras_sigmas", "true")`): values
    /// are JSON or, failing that, strings. An unknown key or a mistyped value fails the request
    /// with an error naming both.
    pub config_overrides: Vec<(String, String)>,
}

/// An img2img or inpainting start image.
#[derive(Debug, Clone)]
pub struct InitImage {
    pub image: RgbImage,
    /// How much of the schedule to run, in `[0, 1]`: 1 starts from pure noise, 0.6 skips the
    /// first 40 % of the steps and starts from the image noised to that level.
    pub strength: f64,
}

/// One generation: txt2img, or img2img with [`init`](Self::init), or inpainting with
/// [`init`](Self::init) and [`mask`](Self::mask).
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: String,
    /// The unconditional prompt of classifier-free guidance (`""` when empty).
    pub negative_prompt: String,
    /// Image width in pixels; `None`: the init image's, else the pipeline's default.
    pub width: Option<usize>,
    /// Image height in pixels; `None`: the init image's, else the pipeline's default.
    pub height: Option<usize>,
    /// Inference steps given to the scheduler.
    pub steps: usize,
    /// Classifier-free guidance scale; at most 1 runs only the conditional pass (as diffusers).
    pub guidance_scale: f32,
    pub seeds: Seeds,
    /// Where the noise comes from: torch's CPU generator (default) or A1111's NV source.
    pub rng: RngSource,
    /// Images per call.
    pub batch_size: usize,
    pub init: Option<InitImage>,
    /// White (≥ 50 % grey) repaints, black keeps. Needs [`init`](Self::init).
    pub mask: Option<GrayImage>,
    /// What the masked region starts from (A1111's "Masked content"); only with a mask.
    pub masked_content: MaskedContent,
    /// The sampler and its options (unset: the model's defaults).
    pub sampler: SamplerSettings,
    /// Clip skip and prompt mode (unset: the model's defaults).
    pub text: TextOptions,
    /// txt2img only: a second pass at a larger size from the resized latents (A1111's hires
    /// fix); the images come out at the hires size.
    pub hires: Option<HiresFix>,
}

impl GenerationRequest {
    /// A txt2img request with diffusers' defaults: 50 steps, guidance 7.5, seed 0, one image.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            width: None,
            height: None,
            steps: 50,
            guidance_scale: 7.5,
            seeds: Seeds::Single(0),
            rng: RngSource::Cpu,
            batch_size: 1,
            init: None,
            mask: None,
            masked_content: MaskedContent::default(),
            sampler: SamplerSettings::default(),
            text: TextOptions::default(),
            hires: None,
        }
    }

    /// The sampler, by diffusers class name or A1111 name (`"Euler a"`, `"DPM++ 2M Karras"`).
    pub fn scheduler(mut self, name: impl Into<String>) -> Self {
        self.sampler.name = Some(name.into());
        self
    }

    /// A1111's schedule type (`"Karras"`, `"Exponential"`, …) for an A1111 sampler name.
    pub fn schedule_type(mut self, schedule_type: impl Into<String>) -> Self {
        self.sampler.schedule_type = Some(schedule_type.into());
        self
    }

    /// η for the samplers that take one (DDIM, A1111's ancestral samplers).
    pub fn eta(mut self, eta: f32) -> Self {
        self.sampler.eta = Some(eta);
        self
    }

    /// Karras σ spacing on or off (samplers that step in σ).
    pub fn karras_sigmas(mut self, on: bool) -> Self {
        self.sampler.karras_sigmas = Some(on);
        self
    }

    /// Change one key of the model's scheduler config for this request (`sd generate
    /// --scheduler-config KEY=VALUE`); see [`SamplerSettings::config_overrides`].
    pub fn scheduler_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.sampler
            .config_overrides
            .push((key.into(), value.into()));
        self
    }

    /// A1111's "Clip skip" (1 = the last layer).
    pub fn clip_skip(mut self, clip_skip: usize) -> Self {
        self.text.clip_skip = Some(clip_skip);
        self
    }

    /// A1111 prompt syntax or the plain, diffusers-identical reading.
    pub fn prompt_mode(mut self, mode: PromptMode) -> Self {
        self.text.prompt_mode = Some(mode);
        self
    }

    pub fn negative_prompt(mut self, negative: impl Into<String>) -> Self {
        self.negative_prompt = negative.into();
        self
    }

    pub fn size(mut self, width: usize, height: usize) -> Self {
        self.width = Some(width);
        self.height = Some(height);
        self
    }

    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    pub fn guidance_scale(mut self, scale: f32) -> Self {
        self.guidance_scale = scale;
        self
    }

    /// One generator for the batch.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seeds = Seeds::Single(seed);
        self
    }

    /// One generator per image; also sets the batch size to `seeds.len()`.
    pub fn seeds(mut self, seeds: Vec<u64>) -> Self {
        self.batch_size = seeds.len();
        self.seeds = Seeds::PerImage(seeds);
        self
    }

    /// The random source: [`RngSource::Cpu`] (torch's CPU generator, as diffusers) or
    /// [`RngSource::Nv`] (A1111's "NV", its imitation of torch's CUDA generator).
    pub fn rng(mut self, source: RngSource) -> Self {
        self.rng = source;
        self
    }

    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// img2img from `image` at `strength`.
    pub fn init_image(mut self, image: RgbImage, strength: f64) -> Self {
        self.init = Some(InitImage { image, strength });
        self
    }

    /// Inpainting: repaint where `mask` is white (needs an init image).
    pub fn mask(mut self, mask: GrayImage) -> Self {
        self.mask = Some(mask);
        self
    }

    /// What the masked region starts from (A1111's `inpainting_fill`; default: the original).
    pub fn masked_content(mut self, content: MaskedContent) -> Self {
        self.masked_content = content;
        self
    }

    /// A1111's hires fix (txt2img only).
    pub fn hires(mut self, hires: HiresFix) -> Self {
        self.hires = Some(hires);
        self
    }

    /// The seed of each image of the batch (a single seed is repeated).
    pub fn image_seeds(&self) -> Vec<u64> {
        match &self.seeds {
            Seeds::Single(seed) => vec![*seed; self.batch_size],
            Seeds::PerImage(seeds) => seeds.clone(),
        }
    }
}

/// A model's spatial constraints, as the pipeline sees them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    /// Pixels per latent (the VAE's 2^(levels − 1)).
    pub vae_factor: usize,
    /// Latent sides must be multiples of this (the UNet's 2^(levels − 1)).
    pub latent_multiple: usize,
    pub default_size: (usize, usize),
}

/// A request checked against the model: sizes resolved, every argument in range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked {
    pub width: usize,
    pub height: usize,
    /// Classifier-free guidance runs (scale > 1).
    pub guided: bool,
    pub strength: f64,
}

impl Geometry {
    /// Check `request` and resolve its size.
    pub fn check(&self, request: &GenerationRequest) -> Result<Checked> {
        if request.steps == 0 {
            return Err(Error::invalid_argument("steps", "must be at least 1"));
        }
        super::guard::check_batch_size(request.batch_size)?;
        if let Seeds::PerImage(seeds) = &request.seeds
            && seeds.len() != request.batch_size
        {
            return Err(Error::invalid_argument(
                "seeds",
                format!(
                    "{} seeds for a batch of {} (give one seed per image)",
                    seeds.len(),
                    request.batch_size
                ),
            ));
        }
        if let Some(eta) = request.sampler.eta
            && !(eta.is_finite() && eta >= 0.0)
        {
            return Err(Error::invalid_argument(
                "eta",
                format!("must be a finite number ≥ 0, got {eta}"),
            ));
        }
        if !request.guidance_scale.is_finite() {
            return Err(Error::invalid_argument(
                "guidance_scale",
                format!("must be a finite number, got {}", request.guidance_scale),
            ));
        }
        if request.mask.is_some() && request.init.is_none() {
            return Err(Error::invalid_argument(
                "mask",
                "inpainting needs an init image to go with the mask",
            ));
        }
        if request.hires.is_some() && request.init.is_some() {
            return Err(Error::invalid_argument(
                "hires",
                "the hires fix is for txt2img; this request has an init image",
            ));
        }
        let init_size = request
            .init
            .as_ref()
            .map(|init| (init.image.width(), init.image.height()));
        let (default_width, default_height) = init_size.unwrap_or(self.default_size);
        let width = request.width.unwrap_or(default_width);
        let height = request.height.unwrap_or(default_height);
        // A size the request leaves to the init image is the init image's fault, not `width`'s.
        let name = |side: &'static str, given: Option<usize>, of_init: &'static str| {
            if init_size.is_some() && given.is_none() {
                of_init
            } else {
                side
            }
        };
        self.check_side(
            name("width", request.width, "init_image (its width)"),
            width,
        )?;
        self.check_side(
            name("height", request.height, "init_image (its height)"),
            height,
        )?;
        if let Some((w, h)) = init_size
            && (w, h) != (width, height)
        {
            return Err(Error::invalid_argument(
                "init_image",
                format!("is {w}×{h}, but the requested size is {width}×{height} (resize it first)"),
            ));
        }
        if let Some(mask) = &request.mask
            && (mask.width(), mask.height()) != (width, height)
        {
            return Err(Error::invalid_argument(
                "mask",
                format!(
                    "is {}×{}, but the image is {width}×{height}",
                    mask.width(),
                    mask.height()
                ),
            ));
        }
        let strength = request.init.as_ref().map_or(1.0, |init| init.strength);
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::invalid_argument(
                "strength",
                format!("must be in [0, 1], got {strength}"),
            ));
        }
        Ok(Checked {
            width,
            height,
            guided: request.guidance_scale > 1.0,
            strength,
        })
    }

    /// Image sides must be positive multiples of the VAE factor times the UNet's latent multiple,
    /// and at most [`MAX_SIDE`].
    pub(super) fn check_side(&self, name: &str, pixels: usize) -> Result<()> {
        if pixels > MAX_SIDE {
            return Err(Error::invalid_argument(
                name,
                format!("{pixels} is larger than the {MAX_SIDE} pixels this pipeline allows"),
            ));
        }
        let multiple = self.vae_factor * self.latent_multiple;
        if pixels == 0 || !pixels.is_multiple_of(multiple) {
            return Err(Error::invalid_argument(
                name,
                format!(
                    "{pixels} is not a positive multiple of {multiple} (this model's VAE scales by \
                     {} and its UNet needs latent sides that are multiples of {})",
                    self.vae_factor, self.latent_multiple
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    const SD15: Geometry = Geometry {
        vae_factor: 8,
        latent_multiple: 8,
        default_size: (512, 512),
    };

    #[test]
    fn sizes_default_to_the_model_then_to_the_init_image() {
        let checked = SD15.check(&GenerationRequest::new("a")).unwrap();
        assert_eq!((checked.width, checked.height), (512, 512));
        let init = RgbImage::new(64, 128, vec![0; 64 * 128 * 3]).unwrap();
        let request = GenerationRequest::new("a").init_image(init, 0.5);
        let checked = SD15.check(&request).unwrap();
        assert_eq!(
            (checked.width, checked.height, checked.strength),
            (64, 128, 0.5)
        );
    }

    #[test]
    fn bad_sizes_name_the_side_and_the_multiple() {
        let err = SD15
            .check(&GenerationRequest::new("a").size(500, 512))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("width") && text.contains("500") && text.contains("64"),
            "{text}"
        );
        let err = SD15
            .check(&GenerationRequest::new("a").size(512, 0))
            .unwrap_err();
        assert!(err.to_string().contains("height"), "{err}");
    }

    #[test]
    fn inconsistent_requests_are_refused() {
        let mask = GrayImage::new(64, 64, vec![0; 64 * 64]).unwrap();
        assert!(SD15.check(&GenerationRequest::new("a").mask(mask)).is_err());
        assert!(SD15.check(&GenerationRequest::new("a").steps(0)).is_err());
        assert!(
            SD15.check(&GenerationRequest::new("a").batch_size(0))
                .is_err()
        );
        let mut request = GenerationRequest::new("a").seeds(vec![1, 2]);
        request.batch_size = 3;
        assert!(SD15.check(&request).is_err());
        assert!(
            SD15.check(&GenerationRequest::new("a").guidance_scale(f32::NAN))
                .is_err()
        );
        let init = RgbImage::new(64, 64, vec![0; 64 * 64 * 3]).unwrap();
        let request = GenerationRequest::new("a").init_image(init.clone(), 1.5);
        assert!(
            SD15.check(&request)
                .unwrap_err()
                .to_string()
                .contains("strength")
        );
        let request = GenerationRequest::new("a")
            .init_image(init, 0.5)
            .size(128, 64);
        assert!(
            SD15.check(&request)
                .unwrap_err()
                .to_string()
                .contains("init_image")
        );
    }

    #[test]
    fn guidance_above_one_turns_on_the_unconditional_pass() {
        let at = |g| {
            SD15.check(&GenerationRequest::new("a").guidance_scale(g))
                .unwrap()
                .guided
        };
        assert!(!at(1.0));
        assert!(!at(0.5));
        assert!(at(1.01));
    }
}
