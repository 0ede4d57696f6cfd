//! diffusers' `Transformer2DModel` over a feature map, with its `BasicTransformerBlock`s.

use sd_core::weights::Weights;
use sd_core::{Backend, Error, Result, TensorInfo};

use sd_core::nn::{Attention, AttentionShape, GroupNorm, LayerNorm, Linear};

/// diffusers fixes the Transformer2D's group-norm epsilon, whatever the UNet's `norm_eps`.
const GROUP_NORM_EPS: f32 = 1e-6;
/// The LayerNorms inside each transformer block (diffusers' default `norm_eps`).
const LAYER_NORM_EPS: f32 = 1e-5;
/// The GEGLU feed-forward's hidden width is this multiple of the block width.
const FEED_FORWARD_MULT: usize = 4;

/// The sizes a [`Transformer2DModel`] is built for.
#[derive(Debug, Clone, Copy)]
pub struct TransformerShape {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub cross_attention_dim: usize,
    pub groups: usize,
    /// `attn1` attends to the context instead of to the feature map itself.
    pub only_cross_attention: bool,
}

/// `x + proj_out(blocks(proj_in(norm(x))))`, the blocks running over the `h·w` positions as a
/// token sequence.
///
/// `proj_in`/`proj_out` are linears (`use_linear_projection`) or 1×1 convs in the checkpoint;
/// both are the same matrix product, so they are always applied as linears over the tokens.
#[derive(Debug)]
pub struct Transformer2DModel<B: Backend> {
    norm: GroupNorm<B>,
    proj_in: Linear<B>,
    transformer_blocks: Vec<BasicTransformerBlock<B>>,
    proj_out: Linear<B>,
}

impl<B: Backend> Transformer2DModel<B> {
    pub fn load(backend: &B, weights: &Weights<'_>, shape: TransformerShape) -> Result<Self> {
        let c = shape.channels;
        let transformer_blocks = (0..shape.layers)
            .map(|i| {
                BasicTransformerBlock::load(backend, &weights.at("transformer_blocks").at(i), shape)
            })
            .collect::<Result<_>>()?;
        Ok(Transformer2DModel {
            norm: GroupNorm::load(
                backend,
                &weights.at("norm"),
                shape.groups,
                c,
                GROUP_NORM_EPS,
            )?,
            proj_in: Linear::load(backend, &weights.at("proj_in"), c, c, true)?,
            transformer_blocks,
            proj_out: Linear::load(backend, &weights.at("proj_out"), c, c, true)?,
        })
    }

    /// `x [n, c, h, w]` attending to `context [n, seq, cross_attention_dim]` → `[n, c, h, w]`.
    pub fn forward(&self, backend: &B, x: &B::Tensor, context: &B::Tensor) -> Result<B::Tensor> {
        let &[n, c, h, w] = x.shape() else {
            return Err(Error::shape(
                "Transformer2DModel",
                format!("expected [n, c, h, w], found {:?}", x.shape()),
            ));
        };
        let normed = self.norm.forward(backend, x)?;
        let tokens = to_tokens(backend, &normed)?;
        drop(normed);
        let mut tokens = self.proj_in.forward(backend, &tokens)?;
        for block in &self.transformer_blocks {
            tokens = block.forward(backend, &tokens, context)?;
        }
        let tokens = self.proj_out.forward(backend, &tokens)?;
        let map = backend.permute(&backend.reshape(&tokens, &[n, h, w, c])?, &[0, 3, 1, 2])?;
        drop(tokens);
        backend.add(&map, x)
    }
}

/// `[n, c, h, w]` → `[n, h·w, c]`.
pub(crate) fn to_tokens<B: Backend>(backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
    let &[n, c, h, w] = x.shape() else {
        return Err(Error::shape(
            "to_tokens",
            format!("expected [n, c, h, w], found {:?}", x.shape()),
        ));
    };
    let nhwc = backend.permute(x, &[0, 2, 3, 1])?;
    backend.reshape(&nhwc, &[n, h * w, c])
}

/// Self-attention, cross-attention and a GEGLU feed-forward, each pre-normed and residual.
#[derive(Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    norm1: LayerNorm<B>,
    attn1: Attention<B>,
    norm2: LayerNorm<B>,
    attn2: Attention<B>,
    norm3: LayerNorm<B>,
    ff: FeedForward<B>,
    only_cross_attention: bool,
}

impl<B: Backend> BasicTransformerBlock<B> {
    fn load(backend: &B, weights: &Weights<'_>, shape: TransformerShape) -> Result<Self> {
        let dim = shape.channels;
        let attention = |context_dim| AttentionShape {
            query_dim: dim,
            context_dim,
            heads: shape.heads,
            head_dim: dim / shape.heads,
            qkv_bias: false,
        };
        let attn1_context = if shape.only_cross_attention {
            shape.cross_attention_dim
        } else {
            dim
        };
        let norm = |name: &str| LayerNorm::load(backend, &weights.at(name), dim, LAYER_NORM_EPS);
        Ok(BasicTransformerBlock {
            norm1: norm("norm1")?,
            attn1: Attention::load(backend, &weights.at("attn1"), attention(attn1_context))?,
            norm2: norm("norm2")?,
            attn2: Attention::load(
                backend,
                &weights.at("attn2"),
                attention(shape.cross_attention_dim),
            )?,
            norm3: norm("norm3")?,
            ff: FeedForward::load(backend, &weights.at("ff"), dim)?,
            only_cross_attention: shape.only_cross_attention,
        })
    }

    /// `x [n, s, dim]` → `[n, s, dim]`.
    fn forward(&self, backend: &B, x: &B::Tensor, context: &B::Tensor) -> Result<B::Tensor> {
        let normed = self.norm1.forward(backend, x)?;
        let attn1_context = self.only_cross_attention.then_some(context);
        let mixed = self.attn1.forward(backend, &normed, attn1_context)?;
        let x = backend.add(&mixed, x)?;

        let normed = self.norm2.forward(backend, &x)?;
        let mixed = self.attn2.forward(backend, &normed, Some(context))?;
        let x = backend.add(&mixed, &x)?;

        let normed = self.norm3.forward(backend, &x)?;
        let fed = self.ff.forward(backend, &normed)?;
        drop(normed);
        backend.add(&fed, &x)
    }
}

/// `net.2(GEGLU(net.0.proj(x)))`: the projection doubles the hidden width into `[value, gate]`.
#[derive(Debug)]
struct FeedForward<B: Backend> {
    /// `net.0.proj`: `dim → 2·inner`.
    net_0_proj: Linear<B>,
    /// `net.2`: `inner → dim` (`net.1` is a dropout).
    net_2: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    fn load(backend: &B, weights: &Weights<'_>, dim: usize) -> Result<Self> {
        let inner = FEED_FORWARD_MULT * dim;
        Ok(FeedForward {
            net_0_proj: Linear::load(backend, &weights.at("net.0.proj"), dim, 2 * inner, true)?,
            net_2: Linear::load(backend, &weights.at("net.2"), inner, dim, true)?,
        })
    }

    fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let doubled = self.net_0_proj.forward(backend, x)?;
        let gated = backend.geglu(&doubled)?;
        drop(doubled);
        self.net_2.forward(backend, &gated)
    }
}
