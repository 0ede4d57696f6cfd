//! diffusers' `Attention` module: multi-head attention over token sequences.

use crate::weights::Weights;
use crate::{Backend, Result};

use super::Linear;

/// `to_out.0(softmax(q kᵀ / √d) v)` with `q = to_q(x)` and `k, v` from `to_k, to_v` of the
/// context (cross-attention) or of `x` itself (self-attention). Heads stay interleaved in the
/// feature dim, as the backend's attention takes them.
#[derive(Debug)]
pub struct Attention<B: Backend> {
    to_q: Linear<B>,
    to_k: Linear<B>,
    to_v: Linear<B>,
    /// `to_out.0` in the checkpoint (`to_out.1` is a dropout).
    to_out: Linear<B>,
    heads: usize,
    scale: f32,
}

/// The widths an [`Attention`] is built for.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Width of the queries' source (and of the output).
    pub query_dim: usize,
    /// Width of the keys' and values' source: `query_dim` for self-attention.
    pub context_dim: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Whether `to_q, to_k, to_v` have biases (the VAE's do, the UNet's don't).
    pub qkv_bias: bool,
}

impl<B: Backend> Attention<B> {
    pub fn load(backend: &B, weights: &Weights<'_>, shape: AttentionShape) -> Result<Self> {
        let inner = shape.heads * shape.head_dim;
        let projection = |name: &str, from: usize| {
            Linear::load(backend, &weights.at(name), from, inner, shape.qkv_bias)
        };
        Ok(Attention {
            to_q: projection("to_q", shape.query_dim)?,
            to_k: projection("to_k", shape.context_dim)?,
            to_v: projection("to_v", shape.context_dim)?,
            to_out: Linear::load(
                backend,
                &weights.at("to_out.0"),
                inner,
                shape.query_dim,
                true,
            )?,
            heads: shape.heads,
            scale: (shape.head_dim as f64).powf(-0.5) as f32,
        })
    }

    /// `x [n, s, query_dim]` attending to `context [n, s', context_dim]` (to itself when
    /// `None`) → `[n, s, query_dim]`.
    pub fn forward(
        &self,
        backend: &B,
        x: &B::Tensor,
        context: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let source = context.unwrap_or(x);
        let q = self.to_q.forward(backend, x)?;
        let k = self.to_k.forward(backend, source)?;
        let v = self.to_v.forward(backend, source)?;
        let mixed = backend.attention(&q, &k, &v, self.heads, self.scale, false)?;
        drop((q, k, v));
        self.to_out.forward(backend, &mixed)
    }
}
