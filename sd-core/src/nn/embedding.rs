//! `torch.nn.Embedding`: a lookup table of row vectors.

use crate::weights::Weights;
use crate::{Backend, Result};

use super::parameter;

/// A table `weight [count, dim]` whose rows are picked by index.
#[derive(Debug)]
pub struct Embedding<B: Backend> {
    weight: B::Tensor,
}

impl<B: Backend> Embedding<B> {
    /// Load `weight [count, dim]`.
    pub fn load(backend: &B, weights: &Weights<'_>, count: usize, dim: usize) -> Result<Self> {
        Ok(Embedding {
            weight: parameter(backend, weights, "weight", &[count, dim])?,
        })
    }

    /// The rows `ids` (row-major over `shape`) → `[shape..., dim]`.
    pub fn forward(&self, backend: &B, ids: &[u32], shape: &[usize]) -> Result<B::Tensor> {
        backend.embedding(&self.weight, ids, shape)
    }
}
