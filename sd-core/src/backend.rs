//! The `Backend` trait: the small op set Stable Diffusion 1.5 needs.
//!
//! Model code (CLIP, UNet, VAE) is written once as `fn forward<B: Backend>(&self, b: &B, x: &B::Tensor)`.
//! A backend owns its tensors' storage; model code sees only shapes and dtypes. Every op checks
//! its operands' shapes and returns [`Error::Shape`](crate::Error::Shape) instead of panicking.
//!
//! Layout conventions (all tensors are contiguous, row-major):
//! - images and feature maps are `[batch, channels, height, width]` (NCHW, as in the checkpoints);
//! - token sequences are `[batch, seq, features]`;
//! - linear weights are `[out, in]` and conv weights `[out, in, kh, kw]`, as PyTorch stores them.

use crate::error::Result;
use crate::tensor::{DType, HostTensor};

/// What every backend tensor can say about itself.
pub trait TensorInfo {
    /// The tensor's dimensions, outermost first.
    fn shape(&self) -> &[usize];
    /// The element type the tensor is stored in.
    fn dtype(&self) -> DType;
    /// The number of elements.
    fn numel(&self) -> usize {
        self.shape().iter().product()
    }
}

/// Parameters of a 2-D convolution (square kernel steps and padding, no dilation, no groups:
/// all SD 1.5 convolutions have this form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub padding: usize,
}

impl Conv2dParams {
    /// Stride 1 with `padding` zeros on each side (3×3 "same" convs use padding 1).
    pub fn same(padding: usize) -> Self {
        Conv2dParams { stride: 1, padding }
    }
}

/// A tensor backend: storage plus the ops SD 1.5's models need.
///
/// All ops allocate their result; none mutates its inputs. Broadcasting follows NumPy rules.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The backend's tensor handle. Cloning is cheap (shared storage).
    type Tensor: TensorInfo + Clone + Send + Sync + std::fmt::Debug;

    /// A short name for messages and benchmarks ("cpu", "cuda:0").
    fn name(&self) -> String;

    /// Bytes of working memory this backend can still allocate, where it knows (the pipeline
    /// refuses generations that clearly need more, rather than abort on a failed allocation).
    fn available_memory(&self) -> Option<u64> {
        None
    }

    /// The same device computing everything in f32, when this backend computes in reduced
    /// precision (bf16 weights on the CPU, f16 storage on CUDA); `Ok(None)` when it already
    /// computes in f32. The pipeline redoes a reduced-precision decode that overflowed on it
    /// (see [`LatentCodec::decode_full_precision`](crate::LatentCodec::decode_full_precision)).
    fn full_precision(&self) -> Result<Option<Self>>
    where
        Self: Sized,
    {
        Ok(None)
    }

    // ---- data movement -------------------------------------------------------------------

    /// Copy a host tensor to the backend, stored in the backend's compute dtype.
    fn upload(&self, host: &HostTensor) -> Result<Self::Tensor>;

    /// Copy a layer's parameter to the backend. `role` says which product will consume it, so a
    /// backend may store it in a form made for that product once, at load (the CPU backend's
    /// bf16 precision keeps linear and conv weights as packed 16-bit panels). The default is
    /// [`upload`](Backend::upload). Whatever the form, every op still accepts the tensor.
    fn upload_weight(&self, host: &HostTensor, role: WeightRole) -> Result<Self::Tensor> {
        let _ = role;
        self.upload(host)
    }

    /// Copy a tensor back to the host as f32.
    fn download(&self, t: &Self::Tensor) -> Result<HostTensor>;

    // ---- layout --------------------------------------------------------------------------

    /// Same data, new shape (element count must match).
    fn reshape(&self, x: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    /// Reorder dimensions (`axes` is a permutation), materialised contiguous.
    fn permute(&self, x: &Self::Tensor, axes: &[usize]) -> Result<Self::Tensor>;

    /// The slice `start..start+len` along `axis`.
    fn narrow(
        &self,
        x: &Self::Tensor,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<Self::Tensor>;

    /// Concatenate along `axis`; all other dimensions must agree (UNet skip connections
    /// concatenate along channels).
    fn concat(&self, xs: &[&Self::Tensor], axis: usize) -> Result<Self::Tensor>;

    // ---- products ------------------------------------------------------------------------

    /// Batched matrix product `[..., m, k] × [..., k, n] → [..., m, n]`. The batch dims of `b`
    /// must equal those of `a`, or `b` must be 2-D (shared by every batch).
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// `x · wᵀ + bias` over the last dim: `x [..., in]`, `w [out, in]`, `bias [out]`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;

    /// 2-D convolution: `x [n, c, h, w]`, `w [o, c, kh, kw]`, `bias [o]`.
    fn conv2d(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        params: Conv2dParams,
    ) -> Result<Self::Tensor>;

    /// Scaled dot-product attention with the heads interleaved in the feature dim:
    /// `q [b, sq, heads·d]`, `k, v [b, sk, heads·d]` → `[b, sq, heads·d]`.
    /// `softmax(q kᵀ · scale) v` per head; `causal` masks keys after the query position
    /// (CLIP). Implementations must not materialise a full `sq × sk` score matrix per head
    /// when that would be large (SD's 4096×4096 self-attention).
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        heads: usize,
        scale: f32,
        causal: bool,
    ) -> Result<Self::Tensor>;

    // ---- normalisation -------------------------------------------------------------------

    /// Group norm over `x [n, c, ...]` with `groups` groups of `c / groups` channels (c must
    /// divide), per-channel affine `gamma, beta [c]`, followed by SiLU when `silu` is set
    /// (the fused form every UNet/VAE resnet uses).
    fn group_norm(
        &self,
        x: &Self::Tensor,
        groups: usize,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        eps: f32,
        silu: bool,
    ) -> Result<Self::Tensor>;

    /// Layer norm over the last dim with affine `gamma, beta [last]`.
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// Softmax over the last dim.
    fn softmax(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    // ---- elementwise ---------------------------------------------------------------------

    /// Apply a unary activation elementwise.
    fn unary(&self, x: &Self::Tensor, op: UnaryOp) -> Result<Self::Tensor>;

    /// GEGLU: split the last dim in halves `[a, gate]` and return `a · gelu(gate)` (erf GELU,
    /// as diffusers' feed-forward).
    fn geglu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Elementwise binary op with NumPy broadcasting.
    fn binary(&self, a: &Self::Tensor, b: &Self::Tensor, op: BinaryOp) -> Result<Self::Tensor>;

    /// `x · mul + add` with scalars.
    fn affine(&self, x: &Self::Tensor, mul: f32, add: f32) -> Result<Self::Tensor>;

    /// Nearest-neighbour 2× upsampling of `[n, c, h, w]` → `[n, c, 2h, 2w]`.
    fn upsample_nearest2x(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Row lookup: `table [vocab, dim]`, `ids` of shape `ids_shape` → `[ids_shape..., dim]`.
    /// An id past the table is an error.
    fn embedding(
        &self,
        table: &Self::Tensor,
        ids: &[u32],
        ids_shape: &[usize],
    ) -> Result<Self::Tensor>;

    // ---- provided composites -------------------------------------------------------------

    /// `a + b` with broadcasting.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor> {
        self.binary(a, b, BinaryOp::Add)
    }

    /// `a · b` with broadcasting.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor> {
        self.binary(a, b, BinaryOp::Mul)
    }

    /// `x · s`.
    fn scale(&self, x: &Self::Tensor, s: f32) -> Result<Self::Tensor> {
        self.affine(x, s, 0.0)
    }

    /// SiLU (`x · sigmoid(x)`).
    fn silu(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        self.unary(x, UnaryOp::Silu)
    }
}

/// What a parameter is for (see [`Backend::upload_weight`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightRole {
    /// The `w [out, in]` of [`Backend::linear`].
    Linear,
    /// The `w [out, in, kh, kw]` of [`Backend::conv2d`].
    Conv,
    /// Anything else: biases, norm scales, embedding tables.
    Other,
}

/// Elementwise activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `x · sigmoid(x)` (UNet, VAE).
    Silu,
    /// Exact GELU, `0.5 x (1 + erf(x/√2))`.
    Gelu,
    /// CLIP's `x · sigmoid(1.702 x)`.
    QuickGelu,
    /// `max(x, 0)` (TAESD).
    Relu,
    /// `tanh(x)` (TAESD's latent clamp).
    Tanh,
}

/// Elementwise binary ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// The shape NumPy broadcasting gives `a` and `b`, or `None` when they don't broadcast.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() {
            1
        } else {
            a[i - (rank - a.len())]
        };
        let db = if i < rank - b.len() {
            1
        } else {
            b[i - (rank - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::broadcast_shape;

    #[test]
    fn broadcast_follows_numpy_rules() {
        assert_eq!(broadcast_shape(&[2, 3, 4], &[4]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shape(&[2, 3], &[4]), None);
        assert_eq!(broadcast_shape(&[], &[5]), Some(vec![5]));
    }
}
