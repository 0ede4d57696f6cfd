//! The four components a Stable Diffusion pipeline is assembled from.
//!
//! The model crates implement them (`sd-clip`: [`TextEncoder`], `sd-unet`: [`Denoiser`],
//! `sd-vae`: [`LatentCodec`], `sd-schedulers`: [`Scheduler`]); the generic pipeline only talks
//! to these traits. One txt2img call goes like this:
//!
//! ```text
//! let cond = text.encode(b, &[negative, prompt], &request.text)?; // [2, seq, dim]
//! let mut x = gen.randn(&[1, 4, h/f, w/f]) * sched.init_noise_sigma();
//! sched.set_timesteps(steps)?;
//! for (i, &t) in sched.timesteps().to_vec().iter().enumerate() {
//!     let inp = sched.scale_model_input(&x, i)?;             // host, [1, 4, h/f, w/f]
//!     let eps = unet.predict_noise(b, &up(cat[inp, inp]), t, &cond)?;   // [2, 4, h/f, w/f]
//!     let eps = eps_u + g·(eps_c − eps_u);                    // classifier-free guidance
//!     x = sched.step(&eps, i, &x, &mut gen)?;
//! }
//! let image = vae.decode(b, &up(x / vae.scaling_factor()))?;  // [1, 3, h, w] in [-1, 1]
//! ```

use crate::backend::Backend;
use crate::error::{Error, Result};
pub use crate::latent_dist::LatentDist;
use crate::rng::NormalSource;
use crate::tensor::HostTensor;

/// How prompt text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptMode {
    /// AUTOMATIC1111's emphasis syntax, `BREAK`, and prompts of any length in 77-token chunks.
    #[default]
    A1111,
    /// The text literally, truncated to one chunk as diffusers does.
    Plain,
}

/// How one request wants its prompts encoded; `None` leaves a setting at the encoder's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TextOptions {
    /// A1111's "Clip skip": 1 uses the last layer, N stops N − 1 layers before the end.
    pub clip_skip: Option<usize>,
    pub prompt_mode: Option<PromptMode>,
}

/// Turns prompts into the conditioning the denoiser attends to (CLIP's last hidden state).
/// Shared by concurrent requests: per-request settings arrive as [`TextOptions`].
pub trait TextEncoder<B: Backend> {
    /// Encode a batch of prompts to `[prompts.len(), seq, dim]`. All rows share one `seq`
    /// (77 per chunk; long prompts padded to the same number of chunks) so a pipeline can pass
    /// `[negative, positive]` in one call and split the result.
    fn encode(&self, backend: &B, prompts: &[&str], options: &TextOptions) -> Result<B::Tensor>;

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

    /// The divisor latent sides must respect (1 for sd-unet, which crops its up path to each
    /// skip as diffusers does; a denoiser without that would say 2^(levels−1)).
    fn spatial_multiple(&self) -> usize;

    /// The pipeline is done with the denoiser for this generation: drop what can be rebuilt
    /// (see [`OnDemand`](crate::on_demand::OnDemand)). A no-op for a resident model.
    fn release(&self) {}
}

/// Moves between pixels and latents: the VAE.
pub trait LatentCodec<B: Backend> {
    /// `image [n, 3, h, w]` in `[-1, 1]` → the latent distribution (unscaled, log-variance
    /// clamped: [`LatentDist::from_moments`]).
    fn encode(&self, backend: &B, image: &B::Tensor) -> Result<LatentDist<B::Tensor>>;

    /// Unscaled latents `[n, c, h/f, w/f]` → image `[n, 3, h, w]` in roughly `[-1, 1]`.
    /// A pipeline divides its latents by [`scaling_factor`](Self::scaling_factor) first.
    fn decode(&self, backend: &B, latents: &B::Tensor) -> Result<B::Tensor>;

    /// [`decode`](Self::decode) on `full`, the f32 twin of the codec's backend
    /// ([`Backend::full_precision`]), with the weights built again for it; `latents` live on
    /// `full`. The pipeline calls it when a reduced-precision decode gave NaN or infinite pixels
    /// (the fp16 VAE overflow). `Ok(None)`, the default, when the codec cannot rebuild its
    /// weights: the pipeline then reports the non-finite decode as an error.
    fn decode_full_precision(&self, full: &B, latents: &B::Tensor) -> Result<Option<B::Tensor>> {
        let _ = (full, latents);
        Ok(None)
    }

    /// Multiplies sampled latents before denoising (0.18215 for SD 1.5).
    fn scaling_factor(&self) -> f32;

    /// Pixels per latent along each side, `f` (2^(levels−1): 8 for SD 1.5).
    fn downscale_factor(&self) -> usize;

    /// Latent channels (4).
    fn latent_channels(&self) -> usize;

    /// The pipeline is done with the codec for now (after encoding an init image, after
    /// decoding): drop what can be rebuilt. A no-op for a resident model.
    fn release(&self) {}
}

/// The read-only state a sampler's step reads: its timesteps, the number of inference steps, the
/// initial noise σ, and how it scales the model input and noises clean latents. A [`Scheduler`]
/// answers those five methods from it through [`Scheduler::schedule`]; the methods here mean what
/// the [`Scheduler`] methods of the same names document.
pub trait ScheduleState: Send + Sync + std::fmt::Debug {
    /// The model-call timesteps, in order ([`Scheduler::timesteps`]).
    fn timesteps(&self) -> &[f64];

    /// The number of inference steps of the current run, 0 before one is set
    /// ([`Scheduler::inference_steps`]).
    fn steps(&self) -> usize;

    /// The standard deviation of the initial noise ([`Scheduler::init_noise_sigma`]).
    fn init_noise_sigma(&self) -> f32;

    /// The denoiser's input at `timesteps()[index]` ([`Scheduler::scale_model_input`]).
    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor>;

    /// Clean latents noised to the level of `timesteps()[index]` ([`Scheduler::add_noise`]).
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor>;
}

/// What a sampler asks of classifier-free guidance ([`Scheduler::guidance`]). The default is
/// ordinary guidance: the pipeline mixes `ε_u + g·(ε_c − ε_u)` with the request's scale `g` and
/// hands the sampler that mix only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// Multiplies the request's guidance scale (A1111's CFG++ samplers: 1/12.5, which maps
    /// A1111's CFG range [0, 12.5] onto CFG++'s [0, 1]).
    pub scale_multiplier: f64,
    /// The sampler's step needs the unconditional prediction as well as the mix
    /// ([`Scheduler::step_with_unconditional`]). The pipeline then always evaluates both
    /// halves, whatever the scale (A1111 evaluates both at any CFG scale).
    pub needs_unconditional: bool,
}

impl Default for Guidance {
    fn default() -> Self {
        Guidance {
            scale_multiplier: 1.0,
            needs_unconditional: false,
        }
    }
}

/// One lane's share of an error norm over the whole batch ([`Scheduler::error_share`]):
/// shares add up over the lanes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorShare {
    /// Σ of the squared scaled errors of the lane's elements.
    pub sum_of_squares: f64,
    /// How many elements that sum is over.
    pub elements: usize,
}

impl ErrorShare {
    /// The share of two lanes together.
    pub fn plus(self, other: ErrorShare) -> ErrorShare {
        ErrorShare {
            sum_of_squares: self.sum_of_squares + other.sum_of_squares,
            elements: self.elements + other.elements,
        }
    }
}

/// How a run starts part-way into a sampler's schedule ([`Scheduler::begin_part_way`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PartWay {
    /// img2img at this strength in [0, 1] (1: from pure noise, every step).
    Strength(f64),
    /// The hires fix's second pass: run the last `kept` of the steps given to
    /// [`Scheduler::set_timesteps`]; `strength` is the pass's denoising strength.
    Keeping { kept: usize, strength: f64 },
}

/// A sampler: turns model outputs into the next latents. Runs on the host over small latents.
///
/// Every per-step call names its position `index` in [`timesteps`](Self::timesteps), not the
/// timestep value: Heun lists each timestep twice and PNDM repeats one, so a value does not
/// identify a step. Steps must be taken in order (multistep samplers keep a history); img2img
/// starts at [`start_index`](Self::start_index) instead of 0.
pub trait Scheduler: Send {
    /// Prepare `steps` inference steps; must be called before [`timesteps`](Self::timesteps).
    /// Clears any history of an earlier run.
    fn set_timesteps(&mut self, steps: usize) -> Result<()>;

    /// The schedule state the read-only methods below ([`timesteps`](Self::timesteps),
    /// [`inference_steps`](Self::inference_steps), [`init_noise_sigma`](Self::init_noise_sigma),
    /// [`scale_model_input`](Self::scale_model_input), [`add_noise`](Self::add_noise)) delegate
    /// to by default.
    fn schedule(&self) -> &dyn ScheduleState;

    /// The model-call timesteps, in order: one model evaluation per entry. Heun lists each
    /// step's second evaluation as its own entry; PNDM (PLMS) repeats its second timestep.
    fn timesteps(&self) -> &[f64] {
        self.schedule().timesteps()
    }

    /// The `steps` given to [`set_timesteps`](Self::set_timesteps) (0 before it is called).
    fn inference_steps(&self) -> usize {
        self.schedule().steps()
    }

    /// Model evaluations per inference step, diffusers' `order` (2 for Heun, 1 otherwise).
    fn order(&self) -> usize {
        1
    }

    /// The standard deviation of the initial noise (1 for DDIM/PNDM, σ_max for Euler).
    fn init_noise_sigma(&self) -> f32 {
        self.schedule().init_noise_sigma()
    }

    /// Scale the denoiser's input at `timesteps()[index]` (identity for DDIM; `x/√(σ²+1)` for
    /// Euler).
    fn scale_model_input(&self, sample: &HostTensor, index: usize) -> Result<HostTensor> {
        self.schedule().scale_model_input(sample, index)
    }

    /// One model evaluation: from the model output at `timesteps()[index]` and the current
    /// sample, the next sample. Stochastic samplers draw from `generator` exactly as diffusers
    /// does, so a seeded run matches a seeded diffusers run.
    fn step(
        &mut self,
        model_output: &HostTensor,
        index: usize,
        sample: &HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor>;

    /// What this sampler asks of classifier-free guidance; the default is ordinary guidance.
    fn guidance(&self) -> Guidance {
        Guidance::default()
    }

    /// [`step`](Self::step) for a sampler whose [`guidance`](Self::guidance) asks for the
    /// unconditional prediction: `model_output` is the guided mix, `unconditional` the
    /// unconditional half alone. The default ignores `unconditional`.
    fn step_with_unconditional(
        &mut self,
        model_output: &HostTensor,
        unconditional: &HostTensor,
        index: usize,
        sample: &HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        let _ = unconditional;
        self.step(model_output, index, sample, generator)
    }

    /// A sampler whose step sizes follow an error norm over the whole batch (A1111's DPM
    /// adaptive): after a [`step`](Self::step) that ended an attempted step, this lane's share
    /// of the norm. The pipeline adds up the shares of all lanes and hands the total to every
    /// lane's [`settle_step`](Self::settle_step). `None`, the default, for every other sampler
    /// (and for every other evaluation).
    fn error_share(&self) -> Option<ErrorShare> {
        None
    }

    /// Keep or retry the attempted step that [`error_share`](Self::error_share) reported, by
    /// the batch's total; returns the lane's sample from here (the step's result, or the
    /// attempt's start to retry it). Such a sampler plans as it goes: its
    /// [`timesteps`](Self::timesteps) then list the evaluations planned so far. The default
    /// keeps `sample`.
    fn settle_step(
        &mut self,
        batch: ErrorShare,
        sample: &HostTensor,
        generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        let _ = (batch, generator);
        Ok(sample.clone())
    }

    /// Prepare a run that starts part-way (img2img, the hires fix's second pass) after
    /// [`set_timesteps`](Self::set_timesteps), and return the index into
    /// [`timesteps`](Self::timesteps) where denoising starts. The default keeps the plan and
    /// starts at [`start_index`](Self::start_index) (for a hires pass: at
    /// [`start_index_keeping`](Self::start_index_keeping), after `start_index` has accepted
    /// the pass's strength). A sampler whose part-way run is a plan of its own (A1111's PLMS
    /// and UniPC restart their multistep history at the start) makes that plan here; the
    /// read-only methods then answer for it.
    fn begin_part_way(&mut self, start: PartWay) -> Result<usize> {
        match start {
            PartWay::Strength(strength) => self.start_index(strength),
            PartWay::Keeping { kept, strength } => {
                self.start_index(strength)?;
                Ok(self.start_index_keeping(kept))
            }
        }
    }

    /// Noise clean latents to the level of `timesteps()[index]` (img2img: at
    /// [`start_index`](Self::start_index); legacy inpainting: at the index of the next step).
    fn add_noise(
        &self,
        original: &HostTensor,
        noise: &HostTensor,
        index: usize,
    ) -> Result<HostTensor> {
        self.schedule().add_noise(original, noise, index)
    }

    /// img2img: the index into [`timesteps`](Self::timesteps) where denoising starts for
    /// `strength` in [0, 1], diffusers' rule: skip `steps − ⌊steps·strength⌋` inference steps,
    /// each [`order`](Self::order) entries long. Strength 1 starts at 0; strength 0 at the end
    /// (nothing left to denoise).
    fn start_index(&self, strength: f64) -> Result<usize> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::invalid_argument(
                "strength",
                format!("must be in [0, 1], got {strength}"),
            ));
        }
        let steps = self.inference_steps();
        // Truncation as Python's int(): 10 × 0.3 = 3.0000000000000004 → 3.
        let kept = ((steps as f64 * strength) as usize).min(steps);
        Ok(self.start_index_keeping(kept))
    }

    /// The index into [`timesteps`](Self::timesteps) where denoising starts when only the last
    /// `kept` inference steps run (A1111's hires pass): skip `steps − kept` inference steps,
    /// each [`order`](Self::order) entries long.
    fn start_index_keeping(&self, kept: usize) -> usize {
        let steps = self.inference_steps();
        (steps.saturating_sub(kept) * self.order()).min(self.timesteps().len())
    }
}
