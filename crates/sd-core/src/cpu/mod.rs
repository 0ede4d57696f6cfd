//! The CPU reference backend: f32 on ndarray, parallel with rayon.
//!
//! Each concern has its own file: `gemm` (the matrix-product engine), `linalg` (matmul, linear),
//! `conv` (conv2d), `attention` (blockwise online-softmax attention), `norm` (group/layer norm,
//! softmax), `elementwise` (activations, broadcasting binary ops), `layout` (reshape, permute,
//! narrow, concat, upsample, embedding). Naive reference loops for the property tests live in
//! `tests/cpu_ops.rs`.

mod attention;
mod conv;
mod elementwise;
pub mod gemm;
mod layout;
mod linalg;
mod norm;

use ndarray::{ArcArray, ArrayD, IxDyn};

use crate::backend::{Backend, BinaryOp, Conv2dParams, TensorInfo, UnaryOp};
use crate::error::{Error, Result};
use crate::tensor::{DType, HostTensor};

/// A CPU tensor: shared, immutable, always in standard (row-major contiguous) layout.
#[derive(Debug, Clone)]
pub struct CpuTensor(ArcArray<f32, IxDyn>);

impl CpuTensor {
    /// Wrap an array, making it standard-layout if it is not.
    pub fn from_array(a: ArrayD<f32>) -> Self {
        let a = if a.is_standard_layout() {
            a
        } else {
            a.as_standard_layout().into_owned()
        };
        CpuTensor(a.into_shared())
    }

    /// Build from a shape and row-major data.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let a = ArrayD::from_shape_vec(IxDyn(shape), data)
            .map_err(|e| Error::shape("CpuTensor::from_vec", e.to_string()))?;
        Ok(CpuTensor(a.into_shared()))
    }

    /// The row-major elements.
    pub fn data(&self) -> &[f32] {
        // Invariant: every CpuTensor is standard layout, so the slice exists.
        self.0.as_slice().unwrap_or(&[])
    }

    /// An ndarray view of the tensor.
    pub fn view(&self) -> ndarray::ArrayViewD<'_, f32> {
        self.0.view()
    }
}

impl TensorInfo for CpuTensor {
    fn shape(&self) -> &[usize] {
        self.0.shape()
    }
    fn dtype(&self) -> DType {
        DType::F32
    }
}

/// The ndarray CPU backend. Uses rayon's global pool (all cores by default; set
/// `RAYON_NUM_THREADS` to limit it).
#[derive(Debug, Clone, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn upload(&self, host: &HostTensor) -> Result<CpuTensor> {
        Ok(CpuTensor::from_array(host.clone()))
    }

    fn download(&self, t: &CpuTensor) -> Result<HostTensor> {
        Ok(t.0.to_owned())
    }

    fn reshape(&self, x: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        layout::reshape(x, shape)
    }

    fn permute(&self, x: &CpuTensor, axes: &[usize]) -> Result<CpuTensor> {
        layout::permute(x, axes)
    }

    fn narrow(&self, x: &CpuTensor, axis: usize, start: usize, len: usize) -> Result<CpuTensor> {
        layout::narrow(x, axis, start, len)
    }

    fn concat(&self, xs: &[&CpuTensor], axis: usize) -> Result<CpuTensor> {
        layout::concat(xs, axis)
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        linalg::matmul(a, b)
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> Result<CpuTensor> {
        linalg::linear(x, w, bias)
    }

    fn conv2d(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        bias: Option<&CpuTensor>,
        params: Conv2dParams,
    ) -> Result<CpuTensor> {
        conv::conv2d(x, w, bias, params)
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        heads: usize,
        scale: f32,
        causal: bool,
    ) -> Result<CpuTensor> {
        attention::attention(q, k, v, heads, scale, causal)
    }

    fn group_norm(
        &self,
        x: &CpuTensor,
        groups: usize,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        eps: f32,
        silu: bool,
    ) -> Result<CpuTensor> {
        norm::group_norm(x, groups, gamma, beta, eps, silu)
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        norm::layer_norm(x, gamma, beta, eps)
    }

    fn softmax(&self, x: &CpuTensor) -> Result<CpuTensor> {
        norm::softmax(x)
    }

    fn unary(&self, x: &CpuTensor, op: UnaryOp) -> Result<CpuTensor> {
        elementwise::unary(x, op)
    }

    fn geglu(&self, x: &CpuTensor) -> Result<CpuTensor> {
        elementwise::geglu(x)
    }

    fn binary(&self, a: &CpuTensor, b: &CpuTensor, op: BinaryOp) -> Result<CpuTensor> {
        elementwise::binary(a, b, op)
    }

    fn affine(&self, x: &CpuTensor, mul: f32, add: f32) -> Result<CpuTensor> {
        elementwise::affine(x, mul, add)
    }

    fn upsample_nearest2x(&self, x: &CpuTensor) -> Result<CpuTensor> {
        layout::upsample_nearest2x(x)
    }

    fn embedding(&self, table: &CpuTensor, ids: &[u32], ids_shape: &[usize]) -> Result<CpuTensor> {
        layout::embedding(table, ids, ids_shape)
    }
}
