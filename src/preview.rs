//! Live previews of a generation: its latents as an image while denoising runs.
//!
//! [`Previewer::render`] turns the latents a progress callback receives
//! ([`StepProgress::latents`](crate::StepProgress)) into an RGB image, by one of two methods:
//! - [`PreviewMethod::Approx`]: a fixed linear map of the 4 latent channels to RGB, one pixel
//!   per latent (A1111's "Approx cheap"); free, no weights.
//! - [`PreviewMethod::Taesd`]: TAESD decodes the latents to a full-size image (a few seconds at
//!   512² on a CPU, far less on a GPU).

use std::path::PathBuf;

use ndarray::{Axis, Slice};
use sd_core::pipeline::{RgbImage, preview as approx_preview};
use sd_core::{Backend, Error, HostTensor, Result};
use sd_vae::AutoencoderTiny;

/// How previews are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewMethod {
    /// The linear latent → RGB projection at latent resolution.
    Approx,
    /// TAESD at this folder or `.safetensors` file.
    Taesd(PathBuf),
}

impl PreviewMethod {
    /// `approx`, `taesd:PATH` or `none` (`Ok(None)`), as `sd generate --preview` takes them.
    pub fn parse(text: &str) -> Result<Option<Self>> {
        match text.split_once(':') {
            None if text == "approx" => Ok(Some(PreviewMethod::Approx)),
            None if text == "none" => Ok(None),
            Some(("taesd", path)) if !path.is_empty() => {
                Ok(Some(PreviewMethod::Taesd(PathBuf::from(path))))
            }
            _ => Err(Error::invalid_argument(
                "--preview",
                format!("{text:?}: expected approx, taesd:PATH or none"),
            )),
        }
    }
}

/// A loaded preview method.
#[derive(Debug)]
pub enum Previewer<B: Backend> {
    Approx,
    Taesd(Box<AutoencoderTiny<B>>),
}

impl<B: Backend> Previewer<B> {
    /// Load what `method` needs (TAESD's weights) onto `backend`.
    pub fn load(backend: &B, method: &PreviewMethod) -> Result<Self> {
        Ok(match method {
            PreviewMethod::Approx => Previewer::Approx,
            PreviewMethod::Taesd(path) => {
                Previewer::Taesd(Box::new(AutoencoderTiny::load(backend, path)?))
            }
        })
    }

    /// Image `index` of the batch of `latents` (`[batch, 4, h, w]` in the UNet's scale, as the
    /// scheduler holds them).
    pub fn render(&self, backend: &B, latents: &HostTensor, index: usize) -> Result<RgbImage> {
        let &[batch, ..] = latents.shape() else {
            return Err(Error::shape("preview latents", "expected [batch, c, h, w]"));
        };
        if index >= batch {
            return Err(Error::invalid_argument(
                "index",
                format!("image {index} of a batch of {batch}"),
            ));
        }
        match self {
            Previewer::Approx => approx_preview(latents, index).ok_or_else(|| {
                Error::shape(
                    "preview latents",
                    format!(
                        "the approximation needs [batch, 4, h, w], found {:?}",
                        latents.shape()
                    ),
                )
            }),
            Previewer::Taesd(taesd) => {
                let row = latents.slice_axis(Axis(0), Slice::from(index..index + 1));
                let image = backend
                    .download(&taesd.decode_latents(backend, &backend.upload(&row.to_owned())?)?)?;
                let image = image
                    .index_axis(Axis(0), 0)
                    .into_dimensionality()
                    .map_err(|e| Error::shape("TAESD preview", e.to_string()))?;
                Ok(RgbImage::from_tensor(image))
            }
        }
    }
}
