//! The generic Stable Diffusion pipeline over the four component traits.
//!
//! [`Pipeline`] holds a text encoder, a denoiser and a latent codec on one backend and runs
//! txt2img, img2img and inpainting with any [`Scheduler`](crate::Scheduler), reproducing diffusers'
//! `StableDiffusionPipeline`, `StableDiffusionImg2ImgPipeline` and
//! `StableDiffusionInpaintPipeline` step for step, random draws included:
//!
//! ```text
//! cond  = text.encode([negative, prompt])                 # [2, seq, dim], negative first
//! x     = start latents (start.rs: noise, or image latents noised to the start step)
//! for i in start..timesteps.len():
//!     inp = scheduler.scale_model_input(x, i)             # per lane (lane.rs)
//!     eps = unet(cat[inp, inp] (+ mask, masked latents), t_i, cond)
//!     eps = eps_u + g·(eps_c − eps_u)                     # only when g > 1 (†)
//!     x   = scheduler.step(eps, i, x, generator)          # per lane
//!     (error control over the batch: scheduler.settle_step, see below)
//!     (ordinary UNet with a mask: reset the kept region to the noised image latents)
//! image = vae.decode(x / scaling_factor) → bytes
//! ```
//!
//! (†) A sampler's [`Guidance`] may scale g (A1111's CFG++: g/12.5) and ask
//! for `eps_u` too (`step_with_unconditional`); it is then guided at any g. A sampler with
//! error control over the whole batch (A1111's DPM adaptive) reports its share after the step
//! that ends an attempt ([`Scheduler::error_share`](crate::Scheduler::error_share)); the
//! pipeline adds the lanes' shares, lets each lane keep or retry the attempt
//! (`settle_step`), and reads the evaluations it planned next from its timesteps. img2img and
//! the hires fix's pass start where `begin_part_way` says, after the sampler made its plan.
//!
//! Which task runs follows from the request and the denoiser: a mask makes it inpainting
//! (latent blending for a 4-channel UNet); an inpainting (9-channel) UNet always runs as
//! inpainting, with an all-white mask when none is given and a blank image for txt2img —
//! what diffusers' inpainting pipeline computes for those inputs.
//!
//! - `request.rs`: [`GenerationRequest`], [`Seeds`], and the checks against the model.
//! - `image.rs`: [`RgbImage`], [`GrayImage`] and the pixel conversions.
//! - `decode.rs`: the final decode, redone in f32 when reduced precision overflowed
//!   ([`Generation::decoded_in_f32`]).
//! - `mask.rs`: A1111's mask blur and [`MaskedContent`].
//! - `progress.rs`: [`StepProgress`], [`Control`] and the cheap latent preview.
//! - `hires.rs`: [`HiresFix`], A1111's hires fix (a second pass from resized latents, started
//!   as `Task::FromLatents` in `start.rs`); `upscale.rs`: [`LatentUpscaler`], its latent resizes.

mod decode;
mod guard;
mod hires;
mod image;
mod lane;
mod mask;
mod progress;
mod request;
mod start;
mod upscale;

use ndarray::{Axis, Slice, concatenate};

pub use guard::{
    MAX_BATCH_SIZE, available_host_memory, check_batch_size, estimate_generation_bytes,
};
pub use hires::{HiresFix, HiresSizes, HiresTarget};
pub use image::{GrayImage, RgbImage};
pub use lane::SchedulerFactory;
pub use mask::MaskedContent;
pub use progress::{Control, StepProgress, preview};
pub use request::{GenerationRequest, InitImage, MAX_SIDE, SamplerSettings, Seeds};
pub use upscale::LatentUpscaler;

use crate::backend::Backend;
use crate::components::{Denoiser, ErrorShare, Guidance, LatentCodec, PartWay, TextEncoder};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use lane::Lane;
use request::{Checked, Geometry};
use start::{Blend, StartPoint, Task};

/// The default image size when a request gives none (SD 1.5's 512×512).
pub const DEFAULT_SIZE: (usize, usize) = (512, 512);

/// What a generation produced.
#[derive(Debug, Clone)]
pub struct Generation {
    /// One image per batch row.
    pub images: Vec<RgbImage>,
    /// The final latents before decoding, `[batch, c, h, w]` (diffusers' `output_type="latent"`).
    pub latents: HostTensor,
    /// The seed each image was drawn with (a single seed is repeated over the batch).
    pub seeds: Vec<u64>,
    /// Per image, whether a safety checker flagged it (the image is then black); `None` when
    /// no checker ran (the pipeline itself runs none: `stable_diffusion` adds it).
    pub safety_flags: Option<Vec<bool>>,
    /// The batch rows whose decode in the backend's reduced precision gave NaN or infinite
    /// pixels and was redone in f32 (empty on an f32 backend, and normally). Callers say so
    /// once: the image is right, but the precision was too low for this VAE.
    pub decoded_in_f32: Vec<usize>,
}

/// Text encoder, denoiser and latent codec on one backend.
#[derive(Debug)]
pub struct Pipeline<B: Backend, T, D, V> {
    backend: B,
    text_encoder: T,
    denoiser: D,
    codec: V,
    default_size: (usize, usize),
}

impl<B, T, D, V> Pipeline<B, T, D, V>
where
    B: Backend,
    T: TextEncoder<B>,
    D: Denoiser<B>,
    V: LatentCodec<B>,
{
    /// Assemble a pipeline. Images default to [`DEFAULT_SIZE`].
    pub fn new(backend: B, text_encoder: T, denoiser: D, codec: V) -> Self {
        Self {
            backend,
            text_encoder,
            denoiser,
            codec,
            default_size: DEFAULT_SIZE,
        }
    }

    /// The size of images when a request names none (diffusers: the UNet's `sample_size` times
    /// the VAE factor).
    pub fn with_default_size(mut self, width: usize, height: usize) -> Self {
        self.default_size = (width, height);
        self
    }

    pub fn default_size(&self) -> (usize, usize) {
        self.default_size
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn text_encoder(&self) -> &T {
        &self.text_encoder
    }

    pub fn denoiser(&self) -> &D {
        &self.denoiser
    }

    pub fn codec(&self) -> &V {
        &self.codec
    }

    /// Image sides must be multiples of this (the VAE factor times the UNet's latent multiple).
    pub fn size_multiple(&self) -> usize {
        self.codec.downscale_factor() * self.denoiser.spatial_multiple()
    }

    /// Whether the denoiser is an inpainting UNet (latents + mask + masked-image latents).
    pub fn is_inpainting(&self) -> bool {
        self.denoiser.in_channels() == 2 * self.codec.latent_channels() + 1
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            vae_factor: self.codec.downscale_factor(),
            latent_multiple: self.denoiser.spatial_multiple(),
            default_size: self.default_size,
        }
    }

    /// Run `request`, making one scheduler per generator with `new_scheduler`.
    pub fn generate(
        &self,
        request: &GenerationRequest,
        new_scheduler: &SchedulerFactory<'_>,
    ) -> Result<Generation> {
        self.generate_with_progress(request, new_scheduler, &mut |_| Control::Continue)
    }

    /// [`generate`](Self::generate), calling `on_step` after every model evaluation; returning
    /// [`Control::Cancel`] stops with [`Error::Cancelled`], [`Control::Finish`] decodes the
    /// latents of that step (during a hires fix's first pass: at the first pass's size, with
    /// no second pass, as A1111 does when interrupted).
    ///
    /// With a hires fix the steps of both passes are counted as one run in the progress.
    pub fn generate_with_progress(
        &self,
        request: &GenerationRequest,
        new_scheduler: &SchedulerFactory<'_>,
        on_step: &mut dyn FnMut(&StepProgress<'_>) -> Control,
    ) -> Result<Generation> {
        let mut checked = self.geometry().check(request)?;
        let factor = self.codec.downscale_factor();
        let hires = self.hires_plan(request, &checked)?;
        let final_size = hires.as_ref().map_or((checked.width, checked.height), |h| {
            let (w, h) = h.sizes.latent();
            (w * factor, h * factor)
        });
        let task = self.task(request, &checked)?;
        let mut first = Pass::new(
            request,
            request.steps,
            new_scheduler,
            [checked.height / factor, checked.width / factor],
            self.codec.latent_channels(),
            PartWay::Strength(checked.strength),
        )?;
        // A sampler that needs the unconditional prediction (CFG++) is guided at any scale.
        checked.guided |= first.guidance.needs_unconditional;
        self.check_memory(request, &checked, final_size)?;
        first.at.strength = checked.strength;
        if first.evaluations() == 0 {
            return Err(Error::invalid_argument(
                "strength",
                format!(
                    "{} with {} steps leaves no step to run",
                    checked.strength, request.steps
                ),
            ));
        }
        let second = match &hires {
            None => None,
            Some(plan) => {
                let (width, height) = plan.sizes.latent();
                let (schedule, kept) = plan.fix.schedule(request.steps);
                let mut pass = Pass::new(
                    request,
                    schedule,
                    new_scheduler,
                    [height, width],
                    self.codec.latent_channels(),
                    PartWay::Keeping {
                        kept,
                        strength: plan.fix.denoising_strength,
                    },
                )?;
                pass.at.strength = plan.fix.denoising_strength;
                Some(pass)
            }
        };
        let mut counter = StepCounter {
            done: 0,
            total: first.evaluations() + second.as_ref().map_or(0, Pass::evaluations),
        };

        let context = self.context(request, checked.guided)?;
        guard::ensure_finite(
            &self.backend.download(&context)?,
            "text conditioning",
            0,
            counter.total,
        )?;
        let (mut latents, finished) = self.denoise(
            &mut first,
            &task,
            &context,
            request,
            &checked,
            &mut counter,
            on_step,
        )?;
        if let (Some(mut pass), Some(plan), false) = (second, &hires, finished) {
            let task = Task::FromLatents {
                latents: plan.resize(&latents)?,
            };
            (latents, _) = self.denoise(
                &mut pass,
                &task,
                &context,
                request,
                &checked,
                &mut counter,
                on_step,
            )?;
        }

        self.denoiser.release();
        let decoded = decode::decode_batch(&self.backend, &self.codec, &latents, counter.total)?;
        self.codec.release();
        Ok(Generation {
            images: decoded.images,
            latents,
            seeds: request.image_seeds(),
            safety_flags: None,
            decoded_in_f32: decoded.decoded_in_f32,
        })
    }

    /// One denoising pass from its start; the latents, and whether the caller asked to finish
    /// early.
    #[allow(clippy::too_many_arguments)] // the pass's parts, each used once
    fn denoise(
        &self,
        pass: &mut Pass,
        task: &Task,
        context: &B::Tensor,
        request: &GenerationRequest,
        checked: &Checked,
        counter: &mut StepCounter,
        on_step: &mut dyn FnMut(&StepProgress<'_>) -> Control,
    ) -> Result<(HostTensor, bool)> {
        let start = start::prepare(&self.backend, &self.codec, task, &mut pass.lanes, &pass.at)?;
        self.codec.release(); // until the decode
        let mut latents = start.latents;
        let mut index = pass.at.index;
        while index < pass.timesteps.len() {
            let timestep = pass.timesteps[index];
            let lanes = &mut pass.lanes;
            let model_input = self.model_input(lanes, &latents, index, &start.extra_channels)?;
            let prediction = self.predict(
                &model_input,
                timestep,
                context,
                request,
                checked,
                pass.guidance,
            )?;
            let planned = pass.timesteps.len();
            for lane in lanes.iter_mut() {
                let (output, sample) = (lane.rows_of(&prediction.guided), lane.rows_of(&latents));
                let unconditional = prediction.unconditional.as_ref().map(|u| lane.rows_of(u));
                let generator = lane.generator.as_mut();
                let next = match &unconditional {
                    Some(unconditional) => lane.scheduler.step_with_unconditional(
                        &output,
                        unconditional,
                        index,
                        &sample,
                        generator,
                    )?,
                    None => lane.scheduler.step(&output, index, &sample, generator)?,
                };
                let next = match &start.blend {
                    Some(blend) => keep_unmasked(lane, blend, next, index + 1, planned)?,
                    None => next,
                };
                lane.store(&mut latents, &next)?;
            }
            settle_batch_error(lanes, &mut latents)?;
            // A sampler with error control plans as it goes: the evaluations it added.
            if let Some(replanned) = lanes.first().map(|lane| lane.scheduler.timesteps())
                && replanned.len() != planned
            {
                counter.total = (counter.total + replanned.len()).saturating_sub(planned);
                pass.timesteps = replanned.to_vec();
            }
            counter.done += 1;
            guard::ensure_finite(&latents, "latents", counter.done, counter.total)?;
            let progress = StepProgress {
                step: counter.done,
                total: counter.total,
                timestep,
                latents: &latents,
            };
            match on_step(&progress) {
                Control::Continue => {}
                Control::Finish => return Ok((latents, true)),
                Control::Cancel => {
                    return Err(Error::Cancelled {
                        step: counter.done,
                        total: counter.total,
                    });
                }
            }
            index += 1;
        }
        Ok((latents, false))
    }

    /// The hires fix's sizes for `request`, checked against the model; `None` without one.
    fn hires_plan(&self, request: &GenerationRequest, checked: &Checked) -> Result<Option<Hires>> {
        let Some(fix) = &request.hires else {
            return Ok(None);
        };
        if self.is_inpainting() {
            return Err(Error::invalid_argument(
                "hires",
                "the hires fix is not available with an inpainting UNet",
            ));
        }
        let factor = self.codec.downscale_factor();
        let sizes = fix.sizes(checked.width, checked.height, factor)?;
        let (width, height) = sizes.latent();
        self.geometry().check_side("hires width", width * factor)?;
        self.geometry()
            .check_side("hires height", height * factor)?;
        Ok(Some(Hires {
            fix: fix.clone(),
            sizes,
        }))
    }

    /// Refuse a generation whose activations clearly exceed the memory the backend has free
    /// (before anything is allocated: a failed allocation aborts the process).
    fn check_memory(
        &self,
        request: &GenerationRequest,
        checked: &Checked,
        (width, height): (usize, usize),
    ) -> Result<()> {
        let factor = self.codec.downscale_factor();
        let latent_pixels = (width / factor) * (height / factor);
        let rows = request.batch_size * if checked.guided { 2 } else { 1 };
        let needed = guard::estimate_generation_bytes(rows, latent_pixels);
        let what = || {
            format!(
                "a {width}×{height} generation of batch {}{}",
                request.batch_size,
                if checked.guided { " with guidance" } else { "" }
            )
        };
        guard::check_fits(what, needed, self.backend.available_memory())
    }

    /// Which task runs, with the image inputs it needs.
    fn task(&self, request: &GenerationRequest, checked: &Checked) -> Result<Task> {
        let latent_channels = self.codec.latent_channels();
        let in_channels = self.denoiser.in_channels();
        let blank = || HostTensor::zeros(vec![1, 3, checked.height, checked.width]);
        let everywhere = || HostTensor::ones(vec![1, 1, checked.height, checked.width]);
        let content = request.masked_content;
        let image = match (&request.init, &request.mask) {
            (Some(init), Some(mask)) if content == MaskedContent::Fill => {
                Some(init.image.fill_masked(mask)?.to_tensor())
            }
            (init, _) => init.as_ref().map(|init| init.image.to_tensor()),
        };
        let mask = request.mask.as_ref().map(GrayImage::to_binary_tensor);
        if self.is_inpainting() {
            return Ok(Task::Inpaint {
                image: image.unwrap_or_else(blank),
                mask: mask.unwrap_or_else(everywhere),
                content,
            });
        }
        if in_channels != latent_channels {
            return Err(Error::invalid_argument(
                "denoiser",
                format!(
                    "takes {in_channels} input channels; with {latent_channels} latent channels \
                     it must take {latent_channels} (ordinary) or {} (inpainting)",
                    2 * latent_channels + 1
                ),
            ));
        }
        Ok(match (image, mask) {
            (None, _) => Task::Txt2Img,
            (Some(image), None) => Task::Img2Img { image },
            (Some(image), Some(mask)) => Task::BlendInpaint {
                image,
                mask,
                content,
            },
        })
    }

    /// The cross-attention context: `[negative × batch, prompt × batch]` when guided, else
    /// `[prompt × batch]`.
    fn context(&self, request: &GenerationRequest, guided: bool) -> Result<B::Tensor> {
        let b = &self.backend;
        let batch = request.batch_size;
        let prompts: Vec<&str> = if guided {
            vec![&request.negative_prompt, &request.prompt]
        } else {
            vec![&request.prompt]
        };
        let encoded = self.text_encoder.encode(b, &prompts, &request.text)?;
        if batch == 1 {
            return Ok(encoded);
        }
        let rows = (0..prompts.len())
            .map(|i| b.narrow(&encoded, 0, i, 1))
            .collect::<Result<Vec<_>>>()?;
        let repeated: Vec<&B::Tensor> = rows
            .iter()
            .flat_map(|row| std::iter::repeat_n(row, batch))
            .collect();
        b.concat(&repeated, 0)
    }

    /// The denoiser's input at `index` for the whole batch, before guidance doubling.
    fn model_input(
        &self,
        lanes: &[Lane],
        latents: &HostTensor,
        index: usize,
        extra_channels: &Option<HostTensor>,
    ) -> Result<HostTensor> {
        let scaled = lanes
            .iter()
            .map(|lane| {
                lane.scheduler
                    .scale_model_input(&lane.rows_of(latents), index)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut parts: Vec<_> = scaled.iter().map(|s| s.view()).collect();
        let scaled =
            concatenate(Axis(0), &parts).map_err(|e| Error::shape("model input", e.to_string()))?;
        let Some(extra) = extra_channels else {
            return Ok(scaled);
        };
        parts = vec![scaled.view(), extra.view()];
        concatenate(Axis(1), &parts).map_err(|e| Error::shape("inpainting input", e.to_string()))
    }

    /// The (guided) model output for `input [batch, ...]`, with the unconditional half when
    /// `guidance` asks for it.
    fn predict(
        &self,
        input: &HostTensor,
        timestep: f64,
        context: &B::Tensor,
        request: &GenerationRequest,
        checked: &Checked,
        guidance: Guidance,
    ) -> Result<Prediction> {
        let b = &self.backend;
        let batch = request.batch_size;
        let doubled;
        let input = if checked.guided {
            doubled = concatenate(Axis(0), &[input.view(), input.view()])
                .map_err(|e| Error::shape("guidance batch", e.to_string()))?;
            &doubled
        } else {
            input
        };
        let output = self
            .denoiser
            .predict_noise(b, &b.upload(input)?, timestep, context)?;
        let output = b.download(&output)?;
        let mut expected = input.shape().to_vec();
        expected[1] = self.codec.latent_channels();
        if output.shape() != expected.as_slice() {
            return Err(Error::shape(
                "denoiser",
                format!(
                    "returned {:?} for an input of {:?}",
                    output.shape(),
                    input.shape()
                ),
            ));
        }
        if !checked.guided {
            return Ok(Prediction {
                guided: output,
                unconditional: None,
            });
        }
        let uncond = output.slice_axis(Axis(0), Slice::from(0..batch));
        let cond = output.slice_axis(Axis(0), Slice::from(batch..2 * batch));
        // The scale as A1111 forms it (a Python float product) before torch rounds it to f32.
        let g = (f64::from(request.guidance_scale) * guidance.scale_multiplier) as f32;
        // eps_u + g·(eps_c − eps_u), rounded step by step as torch does in f32.
        let mut guided = &cond - &uncond;
        guided.mapv_inplace(|d| g * d);
        guided += &uncond;
        Ok(Prediction {
            guided,
            unconditional: guidance.needs_unconditional.then(|| uncond.to_owned()),
        })
    }
}

/// A sampler with error control over the batch (A1111's DPM adaptive): when the lanes' last
/// step ended an attempted step, hand every lane the batch's total error share and store what
/// each keeps.
fn settle_batch_error(lanes: &mut [Lane], latents: &mut HostTensor) -> Result<()> {
    let total = lanes
        .iter()
        .filter_map(|lane| lane.scheduler.error_share())
        .reduce(ErrorShare::plus);
    let Some(total) = total else {
        return Ok(());
    };
    for lane in lanes.iter_mut() {
        let next =
            lane.scheduler
                .settle_step(total, &lane.rows_of(latents), lane.generator.as_mut())?;
        lane.store(latents, &next)?;
    }
    Ok(())
}

/// Latent blending: outside the mask, replace the lane's latents with the image latents noised
/// to the level of timestep `next` (the clean image latents after the last step).
fn keep_unmasked(
    lane: &Lane,
    blend: &Blend,
    stepped: HostTensor,
    next: usize,
    timesteps: usize,
) -> Result<HostTensor> {
    let image_latents = lane.rows_of(&blend.image_latents);
    let reference = if next < timesteps {
        lane.scheduler
            .add_noise(&image_latents, &lane.rows_of(&blend.noise), next)?
    } else {
        image_latents
    };
    // (1 − m)·reference + m·stepped, with m ∈ {0, 1} broadcast over rows and channels.
    let keep = blend.mask.mapv(|m| 1.0 - m);
    let mut out = &reference * &keep;
    out += &(&stepped * &blend.mask);
    Ok(out)
}

/// One model evaluation's output: the guided mix, and the unconditional half when the
/// sampler's [`Guidance`] asks for it.
struct Prediction {
    guided: HostTensor,
    unconditional: Option<HostTensor>,
}

/// One denoising pass's lanes and schedule.
struct Pass {
    lanes: Vec<Lane>,
    timesteps: Vec<f64>,
    at: StartPoint,
    guidance: Guidance,
}

impl Pass {
    /// Lanes with schedulers set to `steps` and begun at `start` (every lane makes the same
    /// plan: same sampler, same steps).
    fn new(
        request: &GenerationRequest,
        steps: usize,
        new_scheduler: &SchedulerFactory<'_>,
        [height, width]: [usize; 2],
        channels: usize,
        start: PartWay,
    ) -> Result<Self> {
        let mut lanes = Lane::for_batch(
            request.rng,
            &request.seeds,
            request.batch_size,
            steps,
            new_scheduler,
        )?;
        let mut index = None;
        for lane in &mut lanes {
            index = Some(lane.scheduler.begin_part_way(start)?);
        }
        let (Some(index), Some(first)) = (index, lanes.first()) else {
            return Err(Error::invalid_argument("batch_size", "must be at least 1"));
        };
        let timesteps = first.scheduler.timesteps().to_vec();
        let index = index.min(timesteps.len());
        let guidance = first.scheduler.guidance();
        Ok(Self {
            lanes,
            timesteps,
            guidance,
            at: StartPoint {
                latent_shape: [channels, height, width],
                index,
                strength: 1.0,
            },
        })
    }

    /// Model evaluations this pass makes.
    fn evaluations(&self) -> usize {
        self.timesteps.len() - self.at.index
    }
}

/// Model evaluations done and to do over all passes of a generation.
struct StepCounter {
    done: usize,
    total: usize,
}

/// A request's hires fix with its sizes resolved.
struct Hires {
    fix: HiresFix,
    sizes: HiresSizes,
}

impl Hires {
    /// The first pass's latents resized and cropped for the second pass.
    fn resize(&self, latents: &HostTensor) -> Result<HostTensor> {
        let (width, height) = self.sizes.upscaled_latent;
        let resized = self.fix.upscaler.resize(latents, height, width)?;
        let (crop_x, crop_y) = self.sizes.crop;
        let (out_w, out_h) = self.sizes.latent();
        let (left, top) = (crop_x / 2, crop_y / 2);
        Ok(resized
            .slice_axis(Axis(2), Slice::from(top..top + out_h))
            .slice_axis(Axis(3), Slice::from(left..left + out_w))
            .to_owned())
    }
}
