//! The four tasks and the latents each starts from, drawing from the generators in exactly the
//! order diffusers' pipelines do (`prepare_latents`, then the VAE's `latent_dist.sample` calls in
//! `prepare_mask_latents` / `retrieve_latents`).
//!
//! Per generator, diffusers draws:
//! - txt2img: the noise.
//! - from given latents (the hires fix's second pass; diffusers' img2img given 4-channel
//!   latents as its image): the noise, added to the latents at the start step.
//! - img2img: a sample of the init image's latent distribution, then the noise (with a list of
//!   generators, each image's generator samples its own copy of the init image).
//! - inpainting UNet (9 channels): below strength 1 a sample of the init image's latents; the
//!   noise; then a sample of the masked image's latents.
//! - ordinary UNet with a mask: a sample of the init image's latents (always: they are blended
//!   back every step); the noise; then a sample of the masked image's latents that is never used.
//!
//! In both inpainting pipelines diffusers encodes the (single) image once and samples it with
//! the *first* generator of a list only, then repeats the result over the batch; we do the same,
//! so with per-image seeds only the first image of an inpainting batch is what its seed gives alone.

use ndarray::{Axis, concatenate};

use super::lane::Lane;
use crate::backend::Backend;
use crate::components::LatentCodec;
use crate::error::{Error, Result};
use crate::latent_dist::LatentDist;
use crate::rng::NormalSource;
use crate::tensor::HostTensor;

use super::image::downscale_nearest;
use super::mask::MaskedContent;

/// What a generation does, decided from the request and the denoiser's input channels.
#[derive(Debug)]
pub(crate) enum Task {
    Txt2Img,
    /// Start from `image` (`[1, 3, H, W]` in `[-1, 1]`) noised to the start step.
    Img2Img {
        image: HostTensor,
    },
    /// Start from `latents` (`[batch, c, h, w]`, unscaled as the scheduler holds them) noised to
    /// the start step: no VAE encode.
    FromLatents {
        latents: HostTensor,
    },
    /// An inpainting UNet: it sees the mask and the masked image's latents as extra channels.
    /// `mask` is `[1, 1, H, W]`, 1 = repaint.
    Inpaint {
        image: HostTensor,
        mask: HostTensor,
        content: MaskedContent,
    },
    /// An ordinary UNet with a mask: after every step the kept region is reset to the image's
    /// latents noised to the next step's level.
    BlendInpaint {
        image: HostTensor,
        mask: HostTensor,
        content: MaskedContent,
    },
}

/// The kept region's reference for [`Task::BlendInpaint`], per batch row.
#[derive(Debug)]
pub(crate) struct Blend {
    /// The init image's scaled latents, `[batch, c, h, w]`.
    pub image_latents: HostTensor,
    /// The noise the start latents were drawn with, reused to noise `image_latents` each step.
    pub noise: HostTensor,
    /// `[1, 1, h, w]` at latent resolution, 1 = repaint.
    pub mask: HostTensor,
}

/// Everything the denoising loop starts from.
#[derive(Debug)]
pub(crate) struct Start {
    /// `[batch, c, h, w]`.
    pub latents: HostTensor,
    /// For an inpainting UNet: `[batch, 1 + c, h, w]`, the mask then the masked image's latents,
    /// appended to the latents' channels at every step.
    pub extra_channels: Option<HostTensor>,
    pub blend: Option<Blend>,
}

/// Where the loop starts and how latents are shaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartPoint {
    /// `[c, h, w]` of one image's latents.
    pub latent_shape: [usize; 3],
    /// Index into the schedulers' timesteps of the first model evaluation.
    pub index: usize,
    /// 1 means "from pure noise" (no image latents mixed in).
    pub strength: f64,
}

impl StartPoint {
    fn shape(&self, rows: usize) -> [usize; 4] {
        let [c, h, w] = self.latent_shape;
        [rows, c, h, w]
    }
}

/// The VAE's latent distribution of one image, on the host.
struct Posterior {
    dist: LatentDist<HostTensor>,
    scaling_factor: f32,
}

impl Posterior {
    fn encode<B: Backend, V: LatentCodec<B>>(
        backend: &B,
        codec: &V,
        image: &HostTensor,
    ) -> Result<Self> {
        let dist = codec.encode(backend, &backend.upload(image)?)?;
        Ok(Self {
            dist: dist.download(backend)?,
            scaling_factor: codec.scaling_factor(),
        })
    }

    /// `scaling_factor · (mean + σ·ε)`, one `randn(mean.shape)` from `generator`.
    fn sample(&self, generator: &mut dyn NormalSource) -> HostTensor {
        let mut x = self.dist.sample(generator);
        x.mapv_inplace(|v| self.scaling_factor * v);
        x
    }
}

/// `x [1, ...]` repeated to `rows` rows.
fn repeat_rows(x: &HostTensor, rows: usize) -> Result<HostTensor> {
    let mut shape = x.shape().to_vec();
    shape[0] = rows;
    x.broadcast(shape.clone())
        .map(|view| view.to_owned())
        .ok_or_else(|| Error::shape("repeat rows", format!("{:?} to {shape:?}", x.shape())))
}

fn concat_rows(parts: &[HostTensor]) -> Result<HostTensor> {
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views).map_err(|e| Error::shape("concat rows", e.to_string()))
}

/// Draw each lane's noise and form its start latents with `start_from(lane, noise)`.
fn lane_noise(
    lanes: &mut [Lane],
    at: &StartPoint,
    mut start_from: impl FnMut(&Lane, &HostTensor) -> Result<HostTensor>,
) -> Result<(HostTensor, HostTensor)> {
    let mut noises = Vec::with_capacity(lanes.len());
    let mut latents = Vec::with_capacity(lanes.len());
    for lane in lanes.iter_mut() {
        let noise = lane.generator.randn(&at.shape(lane.len()));
        latents.push(start_from(lane, &noise)?);
        noises.push(noise);
    }
    Ok((concat_rows(&latents)?, concat_rows(&noises)?))
}

/// Pure noise at the scheduler's starting σ.
fn scaled_noise(lane: &Lane, noise: &HostTensor) -> HostTensor {
    let sigma = lane.scheduler.init_noise_sigma();
    noise.mapv(|v| v * sigma)
}

/// Prepare the start of `task` for `lanes`, drawing from their generators as diffusers does.
pub(crate) fn prepare<B: Backend, V: LatentCodec<B>>(
    backend: &B,
    codec: &V,
    task: &Task,
    lanes: &mut [Lane],
    at: &StartPoint,
) -> Result<Start> {
    let batch: usize = lanes.iter().map(Lane::len).sum();
    match task {
        Task::Txt2Img => {
            let (latents, _) = lane_noise(lanes, at, |lane, noise| Ok(scaled_noise(lane, noise)))?;
            Ok(Start {
                latents,
                extra_channels: None,
                blend: None,
            })
        }
        Task::Img2Img { image } => {
            let posterior = Posterior::encode(backend, codec, image)?;
            let mut latents = Vec::with_capacity(lanes.len());
            for lane in lanes.iter_mut() {
                // A generator samples the image once for all its rows (with a list of
                // generators, each row's generator samples its own copy).
                let image_latents =
                    repeat_rows(&posterior.sample(lane.generator.as_mut()), lane.len())?;
                let noise = lane.generator.randn(&at.shape(lane.len()));
                latents.push(lane.scheduler.add_noise(&image_latents, &noise, at.index)?);
            }
            Ok(Start {
                latents: concat_rows(&latents)?,
                extra_channels: None,
                blend: None,
            })
        }
        Task::FromLatents { latents } => {
            let (latents, _) = lane_noise(lanes, at, |lane, noise| {
                lane.scheduler
                    .add_noise(&lane.rows_of(latents), noise, at.index)
            })?;
            Ok(Start {
                latents,
                extra_channels: None,
                blend: None,
            })
        }
        Task::Inpaint {
            image,
            mask,
            content,
        } => {
            let from_noise = at.strength >= 1.0;
            let latent_mask = downscale_nearest(mask, mask_factor(mask, at)?);
            let image_latents = if from_noise {
                None
            } else {
                let posterior = Posterior::encode(backend, codec, image)?;
                Some(posterior.sample(first_generator(lanes)?))
            };
            let (latents, _) = lane_noise(lanes, at, |lane, noise| match &image_latents {
                None => Ok(scaled_noise(lane, noise)),
                Some(reference) => {
                    let reference = repeat_rows(reference, lane.len())?;
                    let reference = with_masked_content(*content, reference, noise, &latent_mask);
                    lane.scheduler.add_noise(&reference, noise, at.index)
                }
            })?;
            let masked = masked_image(image, mask);
            let masked_latents =
                Posterior::encode(backend, codec, &masked)?.sample(first_generator(lanes)?);
            let extra = concatenate(Axis(1), &[latent_mask.view(), masked_latents.view()])
                .map_err(|e| Error::shape("inpainting channels", e.to_string()))?;
            Ok(Start {
                latents,
                extra_channels: Some(repeat_rows(&extra, batch)?),
                blend: None,
            })
        }
        Task::BlendInpaint {
            image,
            mask,
            content,
        } => {
            let posterior = Posterior::encode(backend, codec, image)?;
            let image_latents = posterior.sample(first_generator(lanes)?);
            let latent_mask = downscale_nearest(mask, mask_factor(mask, at)?);
            let (latents, noise) = lane_noise(lanes, at, |lane, noise| {
                if at.strength >= 1.0 {
                    Ok(scaled_noise(lane, noise))
                } else {
                    let reference = repeat_rows(&image_latents, lane.len())?;
                    let reference = with_masked_content(*content, reference, noise, &latent_mask);
                    lane.scheduler.add_noise(&reference, noise, at.index)
                }
            })?;
            // diffusers encodes the masked image here too and never uses it; only its draw
            // from the generator matters (a randn of the latents' shape).
            let _unused = first_generator(lanes)?.randn(&at.shape(1));
            Ok(Start {
                latents,
                extra_channels: None,
                blend: Some(Blend {
                    image_latents: repeat_rows(&image_latents, batch)?,
                    noise,
                    mask: latent_mask,
                }),
            })
        }
    }
}

/// A1111's latent "Masked content" on the image latents an inpainting run starts from:
/// `latent noise` puts `noise` (the draw the start is noised with) under the mask, `latent
/// nothing` zeros; `fill` and `original` act on the image, not here. `latent_mask` is
/// `[1, 1, h, w]`, 1 = masked. (The kept region, and the latents blended back into it every
/// step, stay the image's.)
fn with_masked_content(
    content: MaskedContent,
    reference: HostTensor,
    noise: &HostTensor,
    latent_mask: &HostTensor,
) -> HostTensor {
    let kept = latent_mask.mapv(|m| 1.0 - m);
    match content {
        MaskedContent::LatentNoise => &reference * &kept + noise * latent_mask,
        MaskedContent::LatentNothing => &reference * &kept,
        MaskedContent::Fill | MaskedContent::Original => reference,
    }
}

fn first_generator(lanes: &mut [Lane]) -> Result<&mut (dyn NormalSource + 'static)> {
    lanes
        .first_mut()
        .map(|lane| lane.generator.as_mut())
        .ok_or_else(|| Error::invalid_argument("batch_size", "must be at least 1"))
}

/// The image with the repaint region zeroed (diffusers' `image * (mask < 0.5)`).
fn masked_image(image: &HostTensor, mask: &HostTensor) -> HostTensor {
    let keep = mask.mapv(|m| if m < 0.5 { 1.0 } else { 0.0 });
    image * &keep
}

/// Pixels per latent along each side, from the mask's and the latents' heights.
fn mask_factor(mask: &HostTensor, at: &StartPoint) -> Result<usize> {
    let latent_height = at.latent_shape[1];
    let height = mask.shape()[2];
    if latent_height == 0 || !height.is_multiple_of(latent_height) {
        return Err(Error::shape(
            "inpainting mask",
            format!("height {height} is not a multiple of the latent height {latent_height}"),
        ));
    }
    Ok(height / latent_height)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    #[test]
    fn latent_masked_content_replaces_exactly_the_masked_latents() {
        // Two rows, two channels, 1×2 latents; the mask covers the right column.
        let reference = HostTensor::from_shape_fn(vec![2, 2, 1, 2], |i| 1.0 + i[0] as f32);
        let noise = HostTensor::from_shape_fn(vec![2, 2, 1, 2], |i| -5.0 - i[1] as f32);
        let mask = HostTensor::from_shape_vec(vec![1, 1, 1, 2], vec![0.0, 1.0]).unwrap();
        let left = |t: &HostTensor| t.slice(ndarray::s![.., .., .., 0]).to_owned();
        let right = |t: &HostTensor| t.slice(ndarray::s![.., .., .., 1]).to_owned();
        let run = |content| with_masked_content(content, reference.clone(), &noise, &mask);

        let noised = run(MaskedContent::LatentNoise);
        assert_eq!(
            (left(&noised), right(&noised)),
            (left(&reference), right(&noise))
        );
        let zeroed = run(MaskedContent::LatentNothing);
        assert_eq!(left(&zeroed), left(&reference));
        assert!(right(&zeroed).iter().all(|&v| v == 0.0));
        for content in [MaskedContent::Original, MaskedContent::Fill] {
            assert_eq!(run(content), reference);
        }
    }
}
