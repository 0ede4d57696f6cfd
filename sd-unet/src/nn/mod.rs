//! Layers shared by the UNet and the VAE, each loading its own weights from a scoped
//! [`Weights`] view whose prefix is the module's name in the checkpoint.
//!
//! These are the pieces diffusers keeps in `resnet.py`, `downsampling.py`, `upsampling.py`,
//! `attention_processor.py` and `torch.nn`: sd-vae builds its encoder and decoder from them too.

mod attention;
mod conv;
mod linear;
mod norm;
mod resnet;
mod sampling;

pub use attention::{Attention, AttentionShape};
pub use conv::Conv2d;
pub use linear::Linear;
pub use norm::{GroupNorm, LayerNorm};
pub use resnet::{ResnetBlock2D, ResnetShape};
pub use sampling::{Downsample2D, Upsample2D};

use sd_core::weights::Weights;
use sd_core::{Backend, Result, WeightRole};

/// Read the parameter `name` of `weights` in `shape` and upload it to the backend.
pub(crate) fn parameter<B: Backend>(
    backend: &B,
    weights: &Weights<'_>,
    name: &str,
    shape: &[usize],
) -> Result<B::Tensor> {
    weight_parameter(backend, weights, name, shape, WeightRole::Other)
}

/// [`parameter`] for a weight the backend may store in a form made for its product (`role`).
pub(crate) fn weight_parameter<B: Backend>(
    backend: &B,
    weights: &Weights<'_>,
    name: &str,
    shape: &[usize],
    role: WeightRole,
) -> Result<B::Tensor> {
    backend.upload_weight(&weights.get_shaped(name, shape)?, role)
}
