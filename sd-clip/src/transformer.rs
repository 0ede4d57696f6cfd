//! The pre-LN transformer layer both CLIP towers are built from (transformers' `CLIPEncoderLayer`):
//! layer norm → self-attention → residual; layer norm → MLP → residual. The text tower attends
//! causally, the vision tower to every patch; otherwise the layers are the same, so they are
//! written once here.

use sd_core::nn::{LayerNorm, Linear};
use sd_core::weights::Weights;
use sd_core::{Backend, Result, UnaryOp};

/// The sizes and options of one tower's layers, read off its config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layer_norm_eps: f32,
    pub activation: UnaryOp,
    /// Each position sees only itself and those before it (the text tower, trained left to right).
    pub causal: bool,
}

/// Multi-head self-attention.
#[derive(Debug)]
struct SelfAttention<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    out_proj: Linear<B>,
    heads: usize,
    scale: f32,
    causal: bool,
}

impl<B: Backend> SelfAttention<B> {
    fn load(b: &B, w: &Weights<'_>, shape: &LayerShape) -> Result<Self> {
        let dim = shape.hidden;
        Ok(SelfAttention {
            q_proj: Linear::load(b, &w.at("q_proj"), dim, dim, true)?,
            k_proj: Linear::load(b, &w.at("k_proj"), dim, dim, true)?,
            v_proj: Linear::load(b, &w.at("v_proj"), dim, dim, true)?,
            out_proj: Linear::load(b, &w.at("out_proj"), dim, dim, true)?,
            heads: shape.heads,
            scale: ((dim / shape.heads) as f32).powf(-0.5),
            causal: shape.causal,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let q = self.q_proj.forward(b, x)?;
        let k = self.k_proj.forward(b, x)?;
        let v = self.v_proj.forward(b, x)?;
        let attended = b.attention(&q, &k, &v, self.heads, self.scale, self.causal)?;
        self.out_proj.forward(b, &attended)
    }
}

/// fc1 → activation → fc2.
#[derive(Debug)]
struct Mlp<B: Backend> {
    fc1: Linear<B>,
    fc2: Linear<B>,
    activation: UnaryOp,
}

impl<B: Backend> Mlp<B> {
    fn load(b: &B, w: &Weights<'_>, shape: &LayerShape) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::load(b, &w.at("fc1"), shape.hidden, shape.intermediate, true)?,
            fc2: Linear::load(b, &w.at("fc2"), shape.intermediate, shape.hidden, true)?,
            activation: shape.activation,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let hidden = b.unary(&self.fc1.forward(b, x)?, self.activation)?;
        self.fc2.forward(b, &hidden)
    }
}

/// One pre-LN transformer layer (`encoder.layers.N`).
#[derive(Debug)]
pub(crate) struct EncoderLayer<B: Backend> {
    layer_norm1: LayerNorm<B>,
    self_attn: SelfAttention<B>,
    layer_norm2: LayerNorm<B>,
    mlp: Mlp<B>,
}

impl<B: Backend> EncoderLayer<B> {
    /// The layers `0..count` under `w` (a tower's `encoder.layers`).
    pub(crate) fn load_all(
        b: &B,
        w: &Weights<'_>,
        count: usize,
        shape: &LayerShape,
    ) -> Result<Vec<Self>> {
        (0..count).map(|i| Self::load(b, &w.at(i), shape)).collect()
    }

    fn load(b: &B, w: &Weights<'_>, shape: &LayerShape) -> Result<Self> {
        let (dim, eps) = (shape.hidden, shape.layer_norm_eps);
        Ok(EncoderLayer {
            layer_norm1: LayerNorm::load(b, &w.at("layer_norm1"), dim, eps)?,
            self_attn: SelfAttention::load(b, &w.at("self_attn"), shape)?,
            layer_norm2: LayerNorm::load(b, &w.at("layer_norm2"), dim, eps)?,
            mlp: Mlp::load(b, &w.at("mlp"), shape)?,
        })
    }

    /// `x [batch, seq, hidden]` → the same shape.
    pub(crate) fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let attended = self
            .self_attn
            .forward(b, &self.layer_norm1.forward(b, x)?)?;
        let x = b.add(x, &attended)?;
        let transformed = self.mlp.forward(b, &self.layer_norm2.forward(b, &x)?)?;
        b.add(&x, &transformed)
    }
}
