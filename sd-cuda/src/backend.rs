//! [`CudaBackend`]: the device, the kernel cache, tensor allocation and transfers. The ops
//! themselves live in `ops/`, one file per family.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaFunction, CudaModule, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;
use half::f16;
use sd_core::{
    Backend, BinaryOp, Conv2dParams, DType, Error, HostTensor, Result, TensorInfo, UnaryOp,
};

use crate::device::{self, Device};
use crate::kernels::KernelFile;
use crate::nvrtc;
use crate::ops;
use crate::tensor::{Buffer, CudaTensor};

/// The CUDA backend: one device, one stream, f16 or f32 storage with f32 arithmetic.
///
/// Kernels are compiled by NVRTC for the device on first use (a few seconds once per process)
/// and loaded into the device on first use by this backend. GEMMs and convolutions go through
/// cuBLAS with f32 accumulation.
#[derive(Debug)]
pub struct CudaBackend {
    device: Device,
    dtype: DType,
    /// cuBLAS handles are not meant to be driven from several threads at once.
    blas_lock: Mutex<()>,
    modules: Mutex<HashMap<KernelFile, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

/// `f(error)` → an [`Error::Backend`] naming what failed.
pub(crate) fn driver_error(what: &'static str) -> impl Fn(DriverError) -> Error {
    move |e| Error::Backend {
        backend: "cuda",
        reason: format!("{what}: {e}"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps are only ever inserted into whole, so a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CudaBackend {
    /// Open device `ordinal` with f16 storage (the fast mode).
    ///
    /// Fails with [`Error::NoCudaDevice`] when there is no driver, no such device, or the device
    /// is older than Ampere (compute capability 8.0), and with [`Error::NoNvrtc`] when libnvrtc
    /// is missing. Never panics.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_dtype(ordinal, DType::F16)
    }

    /// Open device `ordinal` storing tensors as `dtype`: F16 (the fast mode) or F32 (for exact
    /// comparisons with the CPU backend; cuBLAS then computes in full f32, no TF32).
    pub fn with_dtype(ordinal: usize, dtype: DType) -> Result<Self> {
        if dtype == DType::BF16 {
            return Err(Error::invalid_argument(
                "dtype",
                "the CUDA backend stores F16 or F32, not BF16",
            ));
        }
        let device = device::open(ordinal)?;
        Ok(CudaBackend {
            device,
            dtype,
            blas_lock: Mutex::new(()),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// The number of CUDA devices (0 without a driver). Never panics.
    pub fn device_count() -> usize {
        device::device_count()
    }

    /// The storage type of this backend's tensors.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.device.name
    }

    /// Compile and load every kernel now instead of at first use (benchmarks call this so
    /// that compile time stays out of the timings).
    pub fn warm_up(&self) -> Result<()> {
        for file in KernelFile::ALL {
            self.module(file)?;
        }
        Ok(())
    }

    /// Wait until all queued work is done; reports any error a kernel left behind.
    pub fn synchronize(&self) -> Result<()> {
        self.device
            .stream
            .synchronize()
            .map_err(driver_error("synchronize"))?;
        self.device
            .ctx
            .check_err()
            .map_err(driver_error("an earlier asynchronous operation"))
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.device.stream
    }

    pub(crate) fn sm_count(&self) -> u32 {
        self.device.sm_count
    }

    /// The cuBLAS handle, locked for the duration of a call.
    pub(crate) fn blas(&self) -> Result<(MutexGuard<'_, ()>, &CudaBlas)> {
        let guard = lock(&self.blas_lock);
        self.device
            .ctx
            .bind_to_thread()
            .map_err(driver_error("bind the context for cuBLAS"))?;
        Ok((guard, &self.device.blas))
    }

    fn module(&self, file: KernelFile) -> Result<Arc<CudaModule>> {
        let mut modules = lock(&self.modules);
        if let Some(module) = modules.get(&file) {
            return Ok(module.clone());
        }
        let image = nvrtc::compile_cached(file, self.device.target)?;
        let module = self
            .device
            .ctx
            .load_module(Ptx::from_binary(image.as_ref().clone()))
            .map_err(|e| Error::Backend {
                backend: "cuda",
                reason: format!(
                    "loading {} ({}) into {}: {e}",
                    file.name(),
                    self.device.target.arch(),
                    self.device.name
                ),
            })?;
        modules.insert(file, module.clone());
        Ok(module)
    }

    /// The kernel `name` of `file`.
    pub(crate) fn kernel(&self, file: KernelFile, name: &str) -> Result<CudaFunction> {
        if let Some(f) = lock(&self.functions).get(name) {
            return Ok(f.clone());
        }
        let function = self
            .module(file)?
            .load_function(name)
            .map_err(|e| Error::Backend {
                backend: "cuda",
                reason: format!("kernel {name} in {}: {e}", file.name()),
            })?;
        lock(&self.functions).insert(name.to_string(), function.clone());
        Ok(function)
    }

    /// The instance of kernel `base` for this backend's storage type (`base_f32`/`base_f16`).
    pub(crate) fn typed_kernel(&self, file: KernelFile, base: &str) -> Result<CudaFunction> {
        let suffix = match self.dtype {
            DType::F16 => "f16",
            _ => "f32",
        };
        self.kernel(file, &format!("{base}_{suffix}"))
    }

    /// A new tensor of this backend's dtype with unspecified contents (every op writes all of
    /// its output).
    pub(crate) fn uninit(&self, op: &'static str, shape: &[usize]) -> Result<CudaTensor> {
        self.alloc(op, shape, false)
    }

    /// A new tensor of this backend's dtype filled with zeros.
    pub(crate) fn zeros(&self, op: &'static str, shape: &[usize]) -> Result<CudaTensor> {
        self.alloc(op, shape, true)
    }

    fn alloc(&self, op: &'static str, shape: &[usize], zeroed: bool) -> Result<CudaTensor> {
        let len = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| Error::shape(op, format!("shape {shape:?} has too many elements")))?;
        // The driver refuses zero-byte allocations; an empty tensor keeps one unused element.
        let len = len.max(1);
        let stream = &self.device.stream;
        let alloc = driver_error("allocate device memory");
        let buffer = match (self.dtype, zeroed) {
            (DType::F16, true) => Buffer::F16(stream.alloc_zeros(len).map_err(alloc)?),
            // SAFETY: callers write every element before anything reads it.
            (DType::F16, false) => Buffer::F16(unsafe { stream.alloc(len) }.map_err(alloc)?),
            (_, true) => Buffer::F32(stream.alloc_zeros(len).map_err(alloc)?),
            // SAFETY: as above.
            (_, false) => Buffer::F32(unsafe { stream.alloc(len) }.map_err(alloc)?),
        };
        Ok(CudaTensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
        })
    }

    /// Every input of an op must be stored in this backend's dtype.
    pub(crate) fn expect_dtype(&self, op: &'static str, tensors: &[&CudaTensor]) -> Result<()> {
        match tensors.iter().find(|t| t.dtype() != self.dtype) {
            Some(t) => Err(Error::OpDtype {
                op,
                dtype: t.dtype(),
            }),
            None => Ok(()),
        }
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;

    fn name(&self) -> String {
        format!("cuda:{}", self.device.ctx.ordinal())
    }

    /// An f32 backend on the same device (its own stream and kernel cache) for an f16 one.
    fn full_precision(&self) -> Result<Option<Self>> {
        match self.dtype {
            DType::F32 => Ok(None),
            _ => Self::with_dtype(self.device.ctx.ordinal(), DType::F32).map(Some),
        }
    }

    fn upload(&self, host: &HostTensor) -> Result<CudaTensor> {
        if host.is_empty() {
            return self.uninit("upload", host.shape());
        }
        let stream = &self.device.stream;
        let copy = driver_error("copy to the device");
        let buffer = match self.dtype {
            DType::F16 => {
                let bits: Vec<u16> = host.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
                Buffer::F16(stream.clone_htod(&bits).map_err(copy)?)
            }
            _ => {
                let values: Vec<f32> = host.iter().copied().collect();
                Buffer::F32(stream.clone_htod(&values).map_err(copy)?)
            }
        };
        Ok(CudaTensor {
            buffer: Arc::new(buffer),
            shape: host.shape().to_vec(),
        })
    }

    fn download(&self, t: &CudaTensor) -> Result<HostTensor> {
        let stream = &self.device.stream;
        let copy = driver_error("copy from the device");
        let values: Vec<f32> = match &*t.buffer {
            _ if t.numel() == 0 => Vec::new(),
            Buffer::F32(slice) => stream.clone_dtoh(slice).map_err(copy)?,
            Buffer::F16(slice) => stream
                .clone_dtoh(slice)
                .map_err(copy)?
                .into_iter()
                .map(|bits| f16::from_bits(bits).to_f32())
                .collect(),
        };
        // The copy waits for the kernels before it; surface anything they reported.
        self.synchronize()?;
        HostTensor::from_shape_vec(t.shape.clone(), values)
            .map_err(|e| Error::shape("download", e.to_string()))
    }

    fn reshape(&self, x: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        let target = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if target != Some(x.numel()) {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot reshape {:?} ({} elements) to {shape:?}",
                    x.shape(),
                    x.numel()
                ),
            ));
        }
        Ok(CudaTensor {
            buffer: x.buffer.clone(),
            shape: shape.to_vec(),
        })
    }

    fn permute(&self, x: &CudaTensor, axes: &[usize]) -> Result<CudaTensor> {
        ops::layout::permute(self, x, axes)
    }

    fn narrow(&self, x: &CudaTensor, axis: usize, start: usize, len: usize) -> Result<CudaTensor> {
        ops::layout::narrow(self, x, axis, start, len)
    }

    fn concat(&self, xs: &[&CudaTensor], axis: usize) -> Result<CudaTensor> {
        ops::layout::concat(self, xs, axis)
    }

    fn matmul(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        ops::linalg::matmul(self, a, b)
    }

    fn linear(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        ops::linalg::linear(self, x, w, bias)
    }

    fn conv2d(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
        params: Conv2dParams,
    ) -> Result<CudaTensor> {
        ops::conv::conv2d(self, x, w, bias, params)
    }

    fn attention(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        heads: usize,
        scale: f32,
        causal: bool,
    ) -> Result<CudaTensor> {
        ops::attention::attention(self, q, k, v, heads, scale, causal)
    }

    fn group_norm(
        &self,
        x: &CudaTensor,
        groups: usize,
        gamma: &CudaTensor,
        beta: &CudaTensor,
        eps: f32,
        silu: bool,
    ) -> Result<CudaTensor> {
        ops::norm::group_norm(self, x, groups, gamma, beta, eps, silu)
    }

    fn layer_norm(
        &self,
        x: &CudaTensor,
        gamma: &CudaTensor,
        beta: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        ops::norm::layer_norm(self, x, gamma, beta, eps)
    }

    fn softmax(&self, x: &CudaTensor) -> Result<CudaTensor> {
        ops::norm::softmax(self, x)
    }

    fn unary(&self, x: &CudaTensor, op: UnaryOp) -> Result<CudaTensor> {
        ops::elementwise::unary(self, x, op)
    }

    fn geglu(&self, x: &CudaTensor) -> Result<CudaTensor> {
        ops::elementwise::geglu(self, x)
    }

    fn binary(&self, a: &CudaTensor, b: &CudaTensor, op: BinaryOp) -> Result<CudaTensor> {
        ops::elementwise::binary(self, a, b, op)
    }

    fn affine(&self, x: &CudaTensor, mul: f32, add: f32) -> Result<CudaTensor> {
        ops::elementwise::affine(self, x, mul, add)
    }

    fn upsample_nearest2x(&self, x: &CudaTensor) -> Result<CudaTensor> {
        ops::layout::upsample_nearest2x(self, x)
    }

    fn embedding(
        &self,
        table: &CudaTensor,
        ids: &[u32],
        ids_shape: &[usize],
    ) -> Result<CudaTensor> {
        ops::layout::embedding(self, table, ids, ids_shape)
    }
}
