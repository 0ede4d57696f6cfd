//! `AutoencoderKL`: the SD 1.x VAE, implementing [`LatentCodec`].

use sd_core::nn::Conv2d;
use sd_core::weights::{WeightStore, Weights};
use sd_core::{Backend, Error, LatentCodec, LatentDist, Result, TensorInfo};

use crate::coder::{Decoder, Encoder};
use crate::config::VaeConfig;
use crate::tiling::{Tiling, run_tiled};

/// Encoder + `quant_conv` (1×1 over the moments) and `post_quant_conv` (1×1 over the latents)
/// + decoder, with [`Tiling`] for large images.
#[derive(Debug)]
pub struct AutoencoderKL<B: Backend> {
    config: VaeConfig,
    encoder: Encoder<B>,
    decoder: Decoder<B>,
    quant_conv: Option<Conv2d<B>>,
    post_quant_conv: Option<Conv2d<B>>,
    tiling: Tiling,
}

impl<B: Backend> AutoencoderKL<B> {
    /// Build the VAE `config` describes from `weights` (the VAE component's root). Tiling is
    /// [`Tiling::auto`] with the config's `sample_size` as the tile.
    pub fn load(backend: &B, config: VaeConfig, weights: &Weights<'_>) -> Result<Self> {
        config.check()?;
        let moments = 2 * config.latent_channels;
        let latents = config.latent_channels;
        let quant_conv = if config.use_quant_conv {
            Some(Conv2d::load_same(
                backend,
                &weights.at("quant_conv"),
                moments,
                moments,
                1,
            )?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(Conv2d::load_same(
                backend,
                &weights.at("post_quant_conv"),
                latents,
                latents,
                1,
            )?)
        } else {
            None
        };
        Ok(AutoencoderKL {
            encoder: Encoder::load(backend, &weights.at("encoder"), &config)?,
            decoder: Decoder::load(backend, &weights.at("decoder"), &config)?,
            quant_conv,
            post_quant_conv,
            tiling: Tiling::auto(config.sample_size),
            config,
        })
    }

    /// Build from a store's VAE weights (a diffusers folder or an LDM single file).
    pub fn from_store(backend: &B, config: VaeConfig, store: &WeightStore) -> Result<Self> {
        Self::load(backend, config, &store.vae()?)
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    /// Change when and how encode/decode tile (checked on the next call).
    pub fn set_tiling(&mut self, tiling: Tiling) {
        self.tiling = tiling;
    }

    /// The encoder's moments `[n, 2·latent_channels, H/f, W/f]` (mean, then log-variance, both
    /// unclamped) of `image [n, in_channels, H, W]`, tiled when [`Tiling`] says so.
    pub fn encode_moments(&self, backend: &B, image: &B::Tensor) -> Result<B::Tensor> {
        let (height, width) = self.check_image(image)?;
        let encode_tile = |tile: &B::Tensor| -> Result<B::Tensor> {
            let moments = self.encoder.forward(backend, tile)?;
            match &self.quant_conv {
                Some(conv) => conv.forward(backend, &moments),
                None => Ok(moments),
            }
        };
        if self.tiling.applies(height, width) {
            let grid = self.tiling.encode_grid(self.downscale())?;
            backend.upload(&run_tiled(backend, image, grid, encode_tile)?)
        } else {
            encode_tile(image)
        }
    }

    /// The image `[n, out_channels, h·f, w·f]` of unscaled `latents [n, latent_channels, h, w]`,
    /// tiled when [`Tiling`] says so.
    pub fn decode_latents(&self, backend: &B, latents: &B::Tensor) -> Result<B::Tensor> {
        let (height, width) = self.check_latents(latents)?;
        let decode_tile = |tile: &B::Tensor| -> Result<B::Tensor> {
            match &self.post_quant_conv {
                Some(conv) => self.decoder.forward(backend, &conv.forward(backend, tile)?),
                None => self.decoder.forward(backend, tile),
            }
        };
        let f = self.downscale();
        if self.tiling.applies(height * f, width * f) {
            let grid = self.tiling.decode_grid(f)?;
            backend.upload(&run_tiled(backend, latents, grid, decode_tile)?)
        } else {
            decode_tile(latents)
        }
    }

    fn downscale(&self) -> usize {
        self.config.downscale_factor()
    }

    /// The image's height and width, after checking its shape.
    fn check_image(&self, image: &B::Tensor) -> Result<(usize, usize)> {
        let (channels, f) = (self.config.in_channels, self.downscale());
        match *image.shape() {
            [n, c, h, w]
                if n > 0 && c == channels && h > 0 && w > 0 && h % f == 0 && w % f == 0 =>
            {
                Ok((h, w))
            }
            _ => Err(Error::invalid_argument(
                "image",
                format!(
                    "expected [n, {channels}, H, W] with H and W positive multiples of {f}, \
                     found {:?}",
                    image.shape()
                ),
            )),
        }
    }

    /// The latents' height and width, after checking their shape.
    fn check_latents(&self, latents: &B::Tensor) -> Result<(usize, usize)> {
        let channels = self.config.latent_channels;
        match *latents.shape() {
            [n, c, h, w] if n > 0 && c == channels && h > 0 && w > 0 => Ok((h, w)),
            _ => Err(Error::invalid_argument(
                "latents",
                format!(
                    "expected [n, {channels}, h, w], found {:?}",
                    latents.shape()
                ),
            )),
        }
    }
}

impl<B: Backend> LatentCodec<B> for AutoencoderKL<B> {
    /// The mean and the log-variance (clamped to [`LOGVAR_RANGE`](sd_core::latent_dist::LOGVAR_RANGE)
    /// as diffusers does); draw with [`LatentDist::sample`].
    fn encode(&self, backend: &B, image: &B::Tensor) -> Result<LatentDist<B::Tensor>> {
        let moments = self.encode_moments(backend, image)?;
        LatentDist::from_moments(backend, &moments, self.config.latent_channels)
    }

    fn decode(&self, backend: &B, latents: &B::Tensor) -> Result<B::Tensor> {
        self.decode_latents(backend, latents)
    }

    fn scaling_factor(&self) -> f32 {
        self.config.scaling_factor
    }

    fn downscale_factor(&self) -> usize {
        self.downscale()
    }

    fn latent_channels(&self) -> usize {
        self.config.latent_channels
    }
}
