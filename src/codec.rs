//! [`SdCodec`]: the pipeline's latent codec, the checkpoint's VAE, with the final decode
//! optionally handed to TAESD (`--vae-decoder taesd:PATH`): seconds instead of the full VAE's
//! tens of seconds on a CPU, at some cost in fidelity.

use std::path::{Path, PathBuf};

use sd_core::on_demand::OnDemand;
use sd_core::{Backend, Error, LatentCodec, LatentDist, Result};
use sd_vae::{AutoencoderKL, AutoencoderTiny};

/// The VAE, and the decoder that replaces its decode when one is given.
#[derive(Debug)]
pub struct SdCodec<B: Backend> {
    vae: OnDemand<B, AutoencoderKL<B>>,
    decoder: Option<TaesdDecoder<B>>,
}

/// TAESD, and where it was loaded from (to load it again in f32 for a decode that overflowed).
#[derive(Debug)]
struct TaesdDecoder<B: Backend> {
    taesd: AutoencoderTiny<B>,
    path: PathBuf,
}

impl<B: Backend> SdCodec<B> {
    /// The VAE alone.
    pub fn new(vae: OnDemand<B, AutoencoderKL<B>>) -> Self {
        SdCodec { vae, decoder: None }
    }

    /// Decode with TAESD instead of the VAE (encoding stays the VAE's). The two must agree on
    /// latent channels and pixels per latent; `path` names TAESD in the error when not.
    pub fn with_taesd_decoder(mut self, taesd: AutoencoderTiny<B>, path: &Path) -> Result<Self> {
        let (ours, theirs) = (
            (self.vae.latent_channels(), self.vae.downscale_factor()),
            (taesd.latent_channels(), taesd.downscale_factor()),
        );
        if ours != theirs {
            return Err(Error::invalid_argument(
                "--vae-decoder",
                format!(
                    "{}: TAESD has {} latent channels and {} pixels per latent, the model's VAE \
                     {} and {}",
                    path.display(),
                    theirs.0,
                    theirs.1,
                    ours.0,
                    ours.1
                ),
            ));
        }
        self.decoder = Some(TaesdDecoder {
            taesd,
            path: path.to_path_buf(),
        });
        Ok(self)
    }

    /// The VAE (held or rebuilt on demand).
    pub fn vae(&self) -> &OnDemand<B, AutoencoderKL<B>> {
        &self.vae
    }

    /// Whether the final decode is TAESD's.
    pub fn decodes_with_taesd(&self) -> bool {
        self.decoder.is_some()
    }
}

impl<B: Backend> SdCodec<B> {
    /// The pipeline divided by the VAE's scaling factor; TAESD wants the UNet's scale back (its
    /// own factor is 1), so the division is undone for it.
    fn decode_with_taesd(
        &self,
        taesd: &AutoencoderTiny<B>,
        backend: &B,
        latents: &B::Tensor,
    ) -> Result<B::Tensor> {
        let to_taesd = self.vae.scaling_factor() / taesd.scaling_factor();
        taesd.decode(backend, &backend.scale(latents, to_taesd)?)
    }
}

impl<B: Backend> LatentCodec<B> for SdCodec<B> {
    fn encode(&self, backend: &B, image: &B::Tensor) -> Result<LatentDist<B::Tensor>> {
        self.vae.encode(backend, image)
    }

    fn decode(&self, backend: &B, latents: &B::Tensor) -> Result<B::Tensor> {
        match &self.decoder {
            None => self.vae.decode(backend, latents),
            Some(decoder) => self.decode_with_taesd(&decoder.taesd, backend, latents),
        }
    }

    /// The VAE rebuilt in f32 from its weights, or TAESD loaded again from its file.
    fn decode_full_precision(&self, full: &B, latents: &B::Tensor) -> Result<Option<B::Tensor>> {
        match &self.decoder {
            None => self.vae.decode_full_precision(full, latents),
            Some(decoder) => {
                let taesd = AutoencoderTiny::load(full, &decoder.path)?;
                self.decode_with_taesd(&taesd, full, latents).map(Some)
            }
        }
    }

    fn scaling_factor(&self) -> f32 {
        self.vae.scaling_factor()
    }

    fn downscale_factor(&self) -> usize {
        self.vae.downscale_factor()
    }

    fn latent_channels(&self) -> usize {
        self.vae.latent_channels()
    }

    fn release(&self) {
        self.vae.release();
    }
}
