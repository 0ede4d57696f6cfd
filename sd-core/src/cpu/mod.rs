//! The CPU reference backend: f32 on ndarray, parallel with rayon, with an optional bf16
//! weight path for linear and conv layers ([`Precision::Bf16`]).
//!
//! Each concern has its own file: `gemm` (the matrix-product engine), `linalg` (matmul, linear),
//! `conv` (conv2d), `attention` (blockwise online-softmax attention), `norm` (group/layer norm,
//! softmax), `bf16` (the packed bf16 product engine), `elementwise` (activations, broadcasting binary ops), `layout` (reshape, permute,
//! narrow, concat, upsample, embedding), `winograd` (stride-1 3×3 convs by F(4×4, 3×3) or F(2×2, 3×3)),
//! `features` (the instruction sets in use), `widened` (bf16-stored weights on the f32 engine, for
//! CPUs without bf16 arithmetic). Naive reference loops for the property tests live in
//! `tests/cpu_ops.rs`.

pub mod allocator;
mod attention;
mod attention_avx2;
mod bf16;
mod conv;
mod elementwise;
pub mod features;
pub mod gemm;
mod layout;
mod linalg;
mod norm;
pub mod threads;
mod widened;
mod winograd;

use std::borrow::Cow;
use std::sync::Arc;

use ndarray::{ArcArray, ArrayD, IxDyn};

use crate::backend::{Backend, BinaryOp, Conv2dParams, TensorInfo, UnaryOp, WeightRole};
use crate::error::{Error, Result};
use crate::tensor::{DType, HostTensor};

use bf16::PairPanels;
pub use features::CpuFeatures;

/// A CPU tensor: shared and immutable. Either dense f32 in standard (row-major contiguous)
/// layout, or a linear/conv weight packed in bf16 for [`Precision::Bf16`]'s products.
#[derive(Debug, Clone)]
pub struct CpuTensor(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Dense(ArcArray<f32, IxDyn>),
    Packed(Arc<PackedWeight>),
}

/// A weight in bf16 pair panels (see `bf16.rs`), in the form its product reads: a linear
/// weight `[out, in]` as the right operand, a conv weight `[o, c, kh, kw]` as the left one.
#[derive(Debug)]
struct PackedWeight {
    shape: Vec<usize>,
    panels: PairPanels,
}

impl CpuTensor {
    /// Wrap an array, making it standard-layout if it is not.
    pub fn from_array(a: ArrayD<f32>) -> Self {
        let a = if a.is_standard_layout() {
            a
        } else {
            a.as_standard_layout().into_owned()
        };
        CpuTensor(Repr::Dense(a.into_shared()))
    }

    /// Build from a shape and row-major data.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let a = ArrayD::from_shape_vec(IxDyn(shape), data)
            .map_err(|e| Error::shape("CpuTensor::from_vec", e.to_string()))?;
        Ok(CpuTensor(Repr::Dense(a.into_shared())))
    }

    /// The row-major f32 elements of a dense tensor. A packed bf16 weight has none here (the
    /// slice is empty): read it with [`Backend::download`] or [`dense`](Self::dense).
    pub fn data(&self) -> &[f32] {
        match &self.0 {
            // Invariant: every dense CpuTensor is standard layout, so the slice exists.
            Repr::Dense(a) => a.as_slice().unwrap_or(&[]),
            Repr::Packed(_) => &[],
        }
    }

    /// The tensor as dense f32: itself, or a packed weight unpacked (its bf16 values).
    pub fn dense(&self) -> Cow<'_, CpuTensor> {
        match &self.0 {
            Repr::Dense(_) => Cow::Borrowed(self),
            Repr::Packed(p) => {
                let a = ArrayD::from_shape_vec(IxDyn(&p.shape), p.panels.to_rows())
                    .expect("packed weights keep their element count");
                Cow::Owned(CpuTensor(Repr::Dense(a.into_shared())))
            }
        }
    }

    /// An ndarray view of a dense tensor (see [`data`](Self::data) for packed weights).
    pub fn view(&self) -> ndarray::ArrayViewD<'_, f32> {
        let shape = match &self.0 {
            Repr::Dense(a) => return a.view(),
            Repr::Packed(p) => p.shape.iter().map(|_| 0).collect::<Vec<_>>(),
        };
        ndarray::ArrayViewD::from_shape(IxDyn(&shape), &[]).expect("an empty view")
    }

    /// A packed weight of `shape` (its rows and k as `panels` holds them).
    fn from_panels(shape: Vec<usize>, panels: PairPanels) -> Self {
        CpuTensor(Repr::Packed(Arc::new(PackedWeight { shape, panels })))
    }

    /// The bf16 panels of a packed weight.
    fn packed(&self) -> Option<&PairPanels> {
        match &self.0 {
            Repr::Dense(_) => None,
            Repr::Packed(p) => Some(&p.panels),
        }
    }

    /// Bytes of storage (for memory accounting in benchmarks).
    pub fn size_in_bytes(&self) -> usize {
        match &self.0 {
            Repr::Dense(a) => a.len() * std::mem::size_of::<f32>(),
            Repr::Packed(p) => p.panels.size_in_bytes(),
        }
    }
}

impl TensorInfo for CpuTensor {
    fn shape(&self) -> &[usize] {
        match &self.0 {
            Repr::Dense(a) => a.shape(),
            Repr::Packed(p) => &p.shape,
        }
    }
    fn dtype(&self) -> DType {
        match self.0 {
            Repr::Dense(_) => DType::F32,
            Repr::Packed(_) => DType::BF16,
        }
    }
}

/// What the CPU backend's linear and conv layers compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Everything in f32 (the reference).
    F32,
    /// Linear and conv weights stored in bf16 (half the memory). Where the CPU has
    /// avx512_bf16, they are multiplied with bf16 activations by `VDPBF16PS` (or on AMX tiles
    /// where the CPU has AMX-BF16), accumulating in f32, and attention runs the same way.
    /// Elsewhere the weights are kept as plain bf16 rows and
    /// each product widens them to f32 a cache-sized block at a time for the f32 engine (0.85×
    /// f32's time for a UNet step, 0.93× for a VAE decode on a Zen 3). Everything else (norms,
    /// activations) stays f32.
    Bf16,
    /// The fastest of the two whose images stay within the accuracy rule (PSNR ≥ 35 dB against
    /// f32 on a full-size 512² txt2img): [`Bf16`](Self::Bf16) where the CPU has avx512_bf16
    /// (on a Zen 4 a UNet step 1.3× and a 20-step txt2img 1.24× faster than f32, PSNR
    /// 53.3 dB), [`F32`](Self::F32) elsewhere (bf16 storage without bf16 arithmetic was
    /// 0.85–0.93× f32's time on a Zen 3 in the last measurement, but 0.96–1.11× the day before:
    /// not yet a clear win; see the README). [`CpuBackend::with_precision`]
    /// resolves it when the backend is made; [`CpuBackend::precision`] says what it picked.
    #[default]
    Auto,
}

impl Precision {
    /// What `self` means on this CPU (under `SD_CPU_FEATURES`): [`Auto`](Self::Auto) resolved,
    /// the others as they are.
    pub fn resolve(self) -> Precision {
        match self {
            Precision::Auto if CpuFeatures::get().avx512_bf16 => Precision::Bf16,
            Precision::Auto => Precision::F32,
            chosen => chosen,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "auto" => Ok(Precision::Auto),
            other => Err(Error::invalid_argument(
                "precision",
                format!("unknown precision {other:?}; expected f32, bf16 or auto"),
            )),
        }
    }
}

/// The ndarray CPU backend. Uses rayon's global pool (all cores by default; set
/// `RAYON_NUM_THREADS` to limit it) and the instruction sets of [`CpuFeatures::get`].
#[derive(Debug, Clone)]
pub struct CpuBackend {
    /// Never [`Precision::Auto`]: that is resolved when the backend is made.
    precision: Precision,
    /// Whether the precision was picked by [`Precision::Auto`] (for the backend's name).
    auto: bool,
    /// Whether bf16 products run on bf16 instructions; otherwise bf16 weights are stored as
    /// plain rows, widened to f32 block by block in each product, and attention runs in f32.
    bf16_arithmetic: bool,
}

impl Default for CpuBackend {
    /// [`Precision::Auto`]: the fastest precision within the accuracy rule on this CPU.
    fn default() -> Self {
        Self::with_precision(Precision::Auto)
    }
}

impl CpuBackend {
    /// The f32 reference backend (what the goldens are checked on).
    pub fn new() -> Self {
        Self::with_precision(Precision::F32)
    }

    /// A backend computing linear and conv layers in `precision` ([`Precision::Auto`]
    /// resolved for this CPU).
    pub fn with_precision(precision: Precision) -> Self {
        allocator::keep_freed_buffers();
        threads::cap_global_pool();
        CpuBackend {
            precision: precision.resolve(),
            auto: precision == Precision::Auto,
            bf16_arithmetic: Self::has_bf16_instructions(),
        }
    }

    /// The precision in use: [`Precision::F32`] or [`Precision::Bf16`], never `Auto`.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether bf16 products run on bf16 instructions here (AMX or `VDPBF16PS`; otherwise bf16
    /// weights are widened to f32 for the f32 engine). False when `SD_CPU_FEATURES` caps the
    /// CPU below avx512_bf16.
    pub fn has_bf16_instructions() -> bool {
        bf16::Kernel::detect() != bf16::Kernel::Portable
    }

    /// The precision attention runs in: bf16 only where the CPU has bf16 arithmetic (the
    /// portable bf16 kernel is slower than f32's).
    fn attention_precision(&self) -> Precision {
        match self.precision {
            Precision::Bf16 if self.bf16_arithmetic => Precision::Bf16,
            _ => Precision::F32,
        }
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn available_memory(&self) -> Option<u64> {
        crate::pipeline::available_host_memory()
    }

    fn full_precision(&self) -> Result<Option<Self>> {
        Ok(match self.precision {
            Precision::Bf16 => Some(CpuBackend::with_precision(Precision::F32)),
            // F32 (`precision` is never Auto: it is resolved when the backend is made).
            Precision::F32 | Precision::Auto => None,
        })
    }

    fn name(&self) -> String {
        let name = match (self.precision, self.bf16_arithmetic) {
            (Precision::Bf16, true) => "cpu bf16",
            (Precision::Bf16, false) => "cpu bf16 storage, f32 products",
            _ => "cpu",
        };
        match self.auto {
            true => format!("{name} (precision auto, {})", CpuFeatures::get().describe()),
            false => name.to_string(),
        }
    }

    fn upload(&self, host: &HostTensor) -> Result<CpuTensor> {
        Ok(CpuTensor::from_array(host.clone()))
    }

    fn upload_weight(&self, host: &HostTensor, role: WeightRole) -> Result<CpuTensor> {
        let shape = host.shape().to_vec();
        // The product's operand: a linear weight's rows are the right operand's columns (NR
        // panels), a conv weight's rows the left operand's rows (MR panels, or row tiles for
        // AMX: `bf16::left_width`). Without bf16
        // arithmetic, plain bf16 rows, which the products widen block by block (`widened.rs`).
        let width = match (self.precision, role, shape.len()) {
            (Precision::Bf16, _, _) if !self.bf16_arithmetic => match (role, shape.len()) {
                (WeightRole::Linear, 2) | (WeightRole::Conv, 4) => bf16::PLAIN_ROWS,
                _ => return self.upload(host),
            },
            (Precision::Bf16, WeightRole::Linear, 2) => bf16::NR,
            (Precision::Bf16, WeightRole::Conv, 4) => bf16::left_width(),
            _ => return self.upload(host),
        };
        let host = host.as_standard_layout();
        let data = host.as_slice().unwrap_or(&[]);
        let (rows, k) = (shape[0], shape[1..].iter().product());
        let panels = PairPanels::from_rows(data, rows, k, width);
        Ok(CpuTensor::from_panels(shape, panels))
    }

    fn download(&self, t: &CpuTensor) -> Result<HostTensor> {
        Ok(t.dense().view().to_owned())
    }

    fn reshape(&self, x: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        layout::reshape(&x.dense(), shape)
    }

    fn permute(&self, x: &CpuTensor, axes: &[usize]) -> Result<CpuTensor> {
        layout::permute(&x.dense(), axes)
    }

    fn narrow(&self, x: &CpuTensor, axis: usize, start: usize, len: usize) -> Result<CpuTensor> {
        layout::narrow(&x.dense(), axis, start, len)
    }

    fn concat(&self, xs: &[&CpuTensor], axis: usize) -> Result<CpuTensor> {
        let xs: Vec<_> = xs.iter().map(|x| x.dense()).collect();
        layout::concat(&xs.iter().map(|x| x.as_ref()).collect::<Vec<_>>(), axis)
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        linalg::matmul(&a.dense(), &b.dense())
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> Result<CpuTensor> {
        let bias = bias.map(CpuTensor::dense);
        linalg::linear(&x.dense(), w, bias.as_deref())
    }

    fn conv2d(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        bias: Option<&CpuTensor>,
        params: Conv2dParams,
    ) -> Result<CpuTensor> {
        let bias = bias.map(CpuTensor::dense);
        conv::conv2d(&x.dense(), w, bias.as_deref(), params)
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
        attention::attention(
            &q.dense(),
            &k.dense(),
            &v.dense(),
            heads,
            scale,
            causal,
            self.attention_precision(),
        )
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
        norm::group_norm(&x.dense(), groups, &gamma.dense(), &beta.dense(), eps, silu)
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        norm::layer_norm(&x.dense(), &gamma.dense(), &beta.dense(), eps)
    }

    fn softmax(&self, x: &CpuTensor) -> Result<CpuTensor> {
        norm::softmax(&x.dense())
    }

    fn unary(&self, x: &CpuTensor, op: UnaryOp) -> Result<CpuTensor> {
        elementwise::unary(&x.dense(), op)
    }

    fn geglu(&self, x: &CpuTensor) -> Result<CpuTensor> {
        elementwise::geglu(&x.dense())
    }

    fn binary(&self, a: &CpuTensor, b: &CpuTensor, op: BinaryOp) -> Result<CpuTensor> {
        elementwise::binary(&a.dense(), &b.dense(), op)
    }

    fn affine(&self, x: &CpuTensor, mul: f32, add: f32) -> Result<CpuTensor> {
        elementwise::affine(&x.dense(), mul, add)
    }

    fn upsample_nearest2x(&self, x: &CpuTensor) -> Result<CpuTensor> {
        layout::upsample_nearest2x(&x.dense())
    }

    fn embedding(&self, table: &CpuTensor, ids: &[u32], ids_shape: &[usize]) -> Result<CpuTensor> {
        layout::embedding(&table.dense(), ids, ids_shape)
    }
}
