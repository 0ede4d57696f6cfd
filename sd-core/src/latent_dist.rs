//! The VAE encoder's diagonal Gaussian (diffusers' `DiagonalGaussianDistribution`): built from
//! the encoder's moments, sampled on the host. The one place latents are drawn from an image,
//! for every codec and for the pipeline.

use crate::backend::{Backend, TensorInfo};
use crate::error::{Error, Result};
use crate::rng::NormalSource;
use crate::tensor::HostTensor;

/// diffusers clamps the log-variance to this range before using it; so do we.
pub const LOGVAR_RANGE: (f32, f32) = (-30.0, 20.0);

/// A latent distribution: mean and (clamped) log-variance, `[n, c, h, w]` each.
#[derive(Debug, Clone)]
pub struct LatentDist<T> {
    pub mean: T,
    pub logvar: T,
}

impl<T: TensorInfo> LatentDist<T> {
    /// Split the encoder's moments `[n, 2c, h, w]` into the mean (first `c` channels) and the
    /// log-variance (last `c`), clamped to [`LOGVAR_RANGE`].
    pub fn from_moments<B: Backend<Tensor = T>>(
        backend: &B,
        moments: &T,
        latent_channels: usize,
    ) -> Result<Self> {
        let mean = backend.narrow(moments, 1, 0, latent_channels)?;
        let logvar = backend.narrow(moments, 1, latent_channels, latent_channels)?;
        // The backend has no clamp op; the latents are small (64 KiB at 512²), so clamp on the host.
        let (low, high) = LOGVAR_RANGE;
        let clamped = backend.download(&logvar)?.mapv(|v| v.clamp(low, high));
        Ok(LatentDist {
            mean,
            logvar: backend.upload(&clamped)?,
        })
    }

    /// The distribution on the host.
    pub fn download<B: Backend<Tensor = T>>(&self, backend: &B) -> Result<LatentDist<HostTensor>> {
        let dist = LatentDist {
            mean: backend.download(&self.mean)?,
            logvar: backend.download(&self.logvar)?,
        };
        if dist.mean.shape() != dist.logvar.shape() {
            return Err(Error::shape(
                "latent distribution",
                format!(
                    "mean {:?} and logvar {:?} differ in shape",
                    dist.mean.shape(),
                    dist.logvar.shape()
                ),
            ));
        }
        Ok(dist)
    }
}

impl LatentDist<HostTensor> {
    /// A draw `mean + exp(logvar / 2) · ε` with `ε = randn(mean.shape)` from `generator`, exactly
    /// as diffusers' `latent_dist.sample(generator)` (one `randn` call of the mean's shape, so
    /// img2img's noise stream stays in step with diffusers). Unscaled: a pipeline multiplies by
    /// the codec's `scaling_factor` before denoising.
    pub fn sample(&self, generator: &mut dyn NormalSource) -> HostTensor {
        let mut noise = generator.randn(self.mean.shape());
        // std = exp(0.5 · logvar), then mean + std · ε, in f32 step by step as torch.
        ndarray::Zip::from(&mut noise)
            .and(&self.mean)
            .and(&self.logvar)
            .for_each(|e, &m, &lv| *e = m + (0.5 * lv).exp() * *e);
        noise
    }
}
