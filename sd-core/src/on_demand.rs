//! Components whose weights are held only while the pipeline uses them.
//!
//! A generation uses its models one after the other: the UNet for every step, then the VAE to
//! decode. Holding all of them at once makes the peak memory the sum of their weights plus the
//! largest activations; [`OnDemand`] lets the pipeline drop a model when its phase ends (see
//! [`Denoiser::release`]) and build it again from its weight source when next needed, so the
//! peak is the largest single phase instead. That costs one rebuild per generation and model
//! (a conversion from the mmap'd checkpoint, seconds against minutes of denoising): worth it for
//! one-shot generations like `sd generate`'s, not for a server that generates continuously,
//! which keeps them resident (the default).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::Backend;
use crate::components::{Denoiser, LatentCodec, LatentDist};
use crate::error::Result;

/// Builds a component on a backend (from a weight store it owns).
pub type Build<B, T> = Box<dyn Fn(&B) -> Result<T> + Send + Sync>;

/// A component that is built on first use and, unless resident, dropped on `release`.
pub struct OnDemand<B, T> {
    build: Build<B, T>,
    built: Mutex<Option<Arc<T>>>,
    resident: bool,
    /// What the pipeline asks about the component between uses (channels, factors), read from
    /// the first build.
    facts: Facts,
}

/// The component's answers to the traits' shape questions, which must not need the weights.
#[derive(Debug, Clone, Copy, Default)]
struct Facts {
    in_channels: usize,
    spatial_multiple: usize,
    scaling_factor: f32,
    downscale_factor: usize,
    latent_channels: usize,
}

impl<B: Backend, T> OnDemand<B, T> {
    fn with_facts(
        backend: &B,
        build: Build<B, T>,
        resident: bool,
        facts_of: impl Fn(&T) -> Facts,
    ) -> Result<Self> {
        // Built once now: bad weights fail at load time, with the store's typed errors.
        let first = build(backend)?;
        Ok(OnDemand {
            facts: facts_of(&first),
            build,
            built: Mutex::new(Some(Arc::new(first))),
            resident,
        })
    }

    /// The component, built again if it was released.
    fn get(&self, backend: &B) -> Result<Arc<T>> {
        let mut slot = self.slot();
        if let Some(built) = slot.as_ref() {
            return Ok(Arc::clone(built));
        }
        let built = Arc::new((self.build)(backend)?);
        *slot = Some(Arc::clone(&built));
        Ok(built)
    }

    fn release_now(&self) {
        if !self.resident && self.slot().take().is_some() {
            // Freed weights would otherwise stay in the CPU allocator's heap (see
            // cpu::allocator), out of reach of the next phase's peak accounting.
            crate::cpu::allocator::return_free_memory();
        }
    }

    /// Whether the component is built right now.
    pub fn is_built(&self) -> bool {
        self.slot().is_some()
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<T>>> {
        // A panic while building leaves the slot as it was; it is still usable.
        self.built.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B: Backend, T: Denoiser<B>> OnDemand<B, T> {
    /// A denoiser built by `build`; `resident` keeps it between generations.
    pub fn denoiser(backend: &B, build: Build<B, T>, resident: bool) -> Result<Self> {
        Self::with_facts(backend, build, resident, |d| Facts {
            in_channels: d.in_channels(),
            spatial_multiple: d.spatial_multiple(),
            ..Facts::default()
        })
    }
}

impl<B: Backend, T: LatentCodec<B>> OnDemand<B, T> {
    /// A latent codec (VAE) built by `build`; `resident` keeps it between generations.
    pub fn codec(backend: &B, build: Build<B, T>, resident: bool) -> Result<Self> {
        Self::with_facts(backend, build, resident, |c| Facts {
            scaling_factor: c.scaling_factor(),
            downscale_factor: c.downscale_factor(),
            latent_channels: c.latent_channels(),
            ..Facts::default()
        })
    }
}

impl<B: Backend, T: Denoiser<B>> Denoiser<B> for OnDemand<B, T> {
    fn predict_noise(
        &self,
        backend: &B,
        latents: &B::Tensor,
        timestep: f64,
        context: &B::Tensor,
    ) -> Result<B::Tensor> {
        self.get(backend)?
            .predict_noise(backend, latents, timestep, context)
    }

    fn in_channels(&self) -> usize {
        self.facts.in_channels
    }

    fn spatial_multiple(&self) -> usize {
        self.facts.spatial_multiple
    }

    fn release(&self) {
        self.release_now();
    }
}

impl<B: Backend, T: LatentCodec<B>> LatentCodec<B> for OnDemand<B, T> {
    fn encode(&self, backend: &B, image: &B::Tensor) -> Result<LatentDist<B::Tensor>> {
        self.get(backend)?.encode(backend, image)
    }

    fn decode(&self, backend: &B, latents: &B::Tensor) -> Result<B::Tensor> {
        self.get(backend)?.decode(backend, latents)
    }

    /// Builds a second, f32 copy for this one decode (dropped after it); the held copy stays.
    fn decode_full_precision(&self, full: &B, latents: &B::Tensor) -> Result<Option<B::Tensor>> {
        let f32_copy = (self.build)(full)?;
        f32_copy.decode(full, latents).map(Some)
    }

    fn scaling_factor(&self) -> f32 {
        self.facts.scaling_factor
    }

    fn downscale_factor(&self) -> usize {
        self.facts.downscale_factor
    }

    fn latent_channels(&self) -> usize {
        self.facts.latent_channels
    }

    fn release(&self) {
        self.release_now();
    }
}

impl<B, T> std::fmt::Debug for OnDemand<B, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand")
            .field("resident", &self.resident)
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}
