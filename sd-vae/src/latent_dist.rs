//! The encoder's diagonal Gaussian (diffusers' `DiagonalGaussianDistribution`).

use sd_core::{Backend, Error, LatentDist, Result, TensorInfo, TorchGenerator};

/// diffusers clamps the log-variance to this range before using it; so do we.
pub const LOGVAR_RANGE: (f32, f32) = (-30.0, 20.0);

/// Split moments `[n, 2c, h, w]` into the mean (first `c` channels) and the clamped
/// log-variance (last `c`).
pub(crate) fn split_moments<B: Backend>(
    backend: &B,
    moments: &B::Tensor,
    latent_channels: usize,
) -> Result<LatentDist<B::Tensor>> {
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

/// A draw from `dist`: `mean + exp(logvar / 2) · ε` with `ε = randn(mean.shape)` from
/// `generator`, exactly as diffusers' `latent_dist.sample(generator)` (one `randn` call of the
/// mean's shape, so img2img's noise stream stays in step with diffusers). Unscaled: multiply by
/// the VAE's `scaling_factor` before denoising.
pub fn sample<B: Backend>(
    backend: &B,
    dist: &LatentDist<B::Tensor>,
    generator: &mut TorchGenerator,
) -> Result<B::Tensor> {
    let mean = backend.download(&dist.mean)?;
    let logvar = backend.download(&dist.logvar)?;
    if mean.shape() != logvar.shape() {
        return Err(Error::invalid_argument(
            "dist",
            format!(
                "mean {:?} and logvar {:?} differ in shape",
                dist.mean.shape(),
                dist.logvar.shape()
            ),
        ));
    }
    let mut noise = generator.randn(mean.shape());
    // std = exp(0.5 · logvar) then mean + std · ε, in f32 step by step as torch.
    ndarray::Zip::from(&mut noise)
        .and(&mean)
        .and(&logvar)
        .for_each(|e, &m, &lv| *e = m + (0.5 * lv).exp() * *e);
    backend.upload(&noise)
}
