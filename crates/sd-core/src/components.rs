//! The four components a Stable Diffusion pipeline is assembled from.
//!
//! The model crates implement them (`sd-clip`: [`TextEncoder`], `sd-unet`: [`Denoiser`],
//! `sd-vae`: [`LatentCodec`], `sd-schedulers`: [`Scheduler`]); the generic pipeline only talks
//! to these traits. One txt2img call goes like this:
//!
//! ```text
//! let cond = text.encode(b, &[negative, prompt])?;            // [2, seq, dim]
//! let mut x = gen.randn(&[1, 4, h/f, w/f]) * sched.init_noise_sigma();
//! sched.set_timesteps(steps)?;
//! for t in sched.timesteps().to_vec() {
//!     let inp = sched.scale_model_input(&x, t)?;             // host, [1, 4, h/f, w/f]
//!     let eps = unet.predict_noise(b, &up(cat[inp, inp]), t, &cond)?;   // [2, 4, h/f, w/f]
//!     let eps = eps_u + g·(eps_c − eps_u);                    // classifier-free guidance
//!     x = sched.step(&eps, t, &x, &mut gen)?;
//! }
//! let image = vae.decode(b, &up(x / vae.scaling_factor()))?;  // [1, 3, h, w] in [-1, 1]
//! ```

use crate::backend::Backend;
use crate::error::Result;
use crate::rng::TorchGenerator;
use crate::tensor::HostTensor;

/// Turns prompts into the conditioning the denoiser attends to (CLIP's last hidden state).
pub trait TextEncoder<B: Backend> {
    /// Encode a batch of prompts to `[prompts.len(), seq, dim]`. All rows share one `seq`
    /// (77 per chunk; long prompts padded to the same number of chunks) so a pipeline can pass
    /// `[negative, positive]` in one call and split the result.
    fn encode(&self, backend: &B, prompts: &[&str]) -> Result<B::Tensor>;

    /// The width of the hidden states (768 for SD 1.5).
    fn hidden_size(&self) -> usize;
}

/// Predicts the noise (or v) in noisy latents: the UNet.
pub trait Denoiser<B: Backend> {
    /// `latents [n, in_channels, h, w]` at `timestep`, attending to `context [n, seq, dim]`,
    /// gives the model output `[n, out_channels, h, w]`.
    fn predict_noise(
        &self,
        backend: &B,
        latents: &B::Tensor,
        timestep: f64,
        context: &B::Tensor,
    ) -> Result<B::Tensor>;

    /// 4 for ordinary checkpoints, 9 for inpainting ones (latents + mask + masked-image latents).
    fn in_channels(&self) -> usize;

    /// The spatial divisor latents must respect (2^(levels−1) for the down/up path).
    fn spatial_multiple(&self) -> usize;
}

/// A latent distribution: the VAE encoder's diagonal Gaussian.
#[derive(Debug, Clone)]
pub struct LatentDist<T> {
    pub mean: T,
    pub logvar: T,
}

/// Moves between pixels and latents: the VAE.
pub trait LatentCodec<B: Backend> {
    /// `image [n, 3, h, w]` in `[-1, 1]` → the latent distribution (unscaled).
    fn encode(&self, backend: &B, image: &B::Tensor) -> Result<LatentDist<B::Tensor>>;

    /// Unscaled latents `[n, c, h/f, w/f]` → image `[n, 3, h, w]` in roughly `[-1, 1]`.
    /// A pipeline divides its latents by [`scaling_factor`](Self::scaling_factor) first.
    fn decode(&self, backend: &B, latents: &B::Tensor) -> Result<B::Tensor>;

    /// Multiplies sampled latents before denoising (0.18215 for SD 1.5).
    fn scaling_factor(&self) -> f32;

    /// Pixels per latent along each side, `f` (2^(levels−1): 8 for SD 1.5).
    fn downscale_factor(&self) -> usize;

    /// Latent channels (4).
    fn latent_channels(&self) -> usize;
}

/// A sampler: turns model outputs into the next latents. Runs on the host over small latents.
pub trait Scheduler: Send {
    /// Prepare `steps` inference steps; must be called before [`timesteps`](Self::timesteps).
    fn set_timesteps(&mut self, steps: usize) -> Result<()>;

    /// The model-call timesteps, in order. Heun-style schedulers list each step's second
    /// evaluation as its own entry, so a pipeline calls the model once per entry.
    fn timesteps(&self) -> &[f64];

    /// The standard deviation of the initial noise (1 for DDIM/PNDM, σ_max for Euler).
    fn init_noise_sigma(&self) -> f32;

    /// Scale the denoiser's input at `timestep` (identity for DDIM; `x/√(σ²+1)` for Euler).
    fn scale_model_input(&self, sample: &HostTensor, timestep: f64) -> Result<HostTensor>;

    /// One step: from the model output at `timestep` and the current sample, the next sample.
    /// Stochastic samplers draw from `generator` exactly as diffusers does.
    fn step(
        &mut self,
        model_output: &HostTensor,
        timestep: f64,
        sample: &HostTensor,
        generator: &mut TorchGenerator,
    ) -> Result<HostTensor>;

    /// Noise clean latents to the level of `timestep` (img2img, inpainting).
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        timestep: f64,
    ) -> Result<HostTensor>;
}
