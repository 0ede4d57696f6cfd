//! The layer library every model is built from (CLIP, the UNet, the VAE): each layer loads its
//! own weights from a scoped [`Weights`] view whose prefix is the module's name in the
//! checkpoint, and runs on any [`Backend`].
//!
//! These are the pieces diffusers keeps in `resnet.py`, `downsampling.py`, `upsampling.py`,
//! `attention_processor.py` and `torch.nn`. One argument order everywhere: inputs before
//! outputs (`Linear::load(b, w, in_features, out_features, bias)`).

mod attention;
mod conv;
mod embedding;
mod linear;
mod norm;
mod resnet;
mod sampling;

pub use attention::{Attention, AttentionShape};
pub use conv::Conv2d;
pub use embedding::Embedding;
pub use linear::Linear;
pub use norm::{GroupNorm, LayerNorm};
pub use resnet::{ResnetBlock2D, ResnetShape};
pub use sampling::{Downsample2D, Upsample2D};

use crate::weights::Weights;
use crate::{Backend, Result, WeightRole};

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
