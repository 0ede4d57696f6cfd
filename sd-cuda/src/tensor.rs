//! Device tensors: a shared device buffer plus a shape.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, LaunchArgs, PushKernelArg};
use sd_core::{DType, TensorInfo};

/// A device buffer in one of the two storage types. f16 values are kept as their bit patterns
/// (`u16`): the kernels convert them with PTX `cvt` instructions, and cuBLAS reads them as
/// `CUDA_R_16F`.
#[derive(Debug)]
pub(crate) enum Buffer {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
}

impl Buffer {
    pub fn dtype(&self) -> DType {
        match self {
            Buffer::F32(_) => DType::F32,
            Buffer::F16(_) => DType::F16,
        }
    }
}

/// A CUDA tensor: contiguous, row-major, immutable once made. Cloning shares the buffer;
/// `reshape` shares it too.
#[derive(Debug, Clone)]
pub struct CudaTensor {
    pub(crate) buffer: Arc<Buffer>,
    pub(crate) shape: Vec<usize>,
}

impl TensorInfo for CudaTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn dtype(&self) -> DType {
        self.buffer.dtype()
    }
}

/// Passing a tensor's device pointer to a kernel, whatever its storage type.
pub(crate) trait PushTensor<'a> {
    fn tensor(&mut self, t: &'a CudaTensor) -> &mut Self;
}

impl<'a> PushTensor<'a> for LaunchArgs<'a> {
    fn tensor(&mut self, t: &'a CudaTensor) -> &mut Self {
        match &*t.buffer {
            Buffer::F32(slice) => self.arg(slice),
            Buffer::F16(slice) => self.arg(slice),
        }
    }
}

impl CudaTensor {
    /// The raw device address of the first element, for cuBLAS.
    pub(crate) fn device_ptr(&self, stream: &cudarc::driver::CudaStream) -> u64 {
        use cudarc::driver::DevicePtr;
        // The returned guard only records events, which sd-cuda turns off (one stream).
        match &*self.buffer {
            Buffer::F32(slice) => slice.device_ptr(stream).0,
            Buffer::F16(slice) => slice.device_ptr(stream).0,
        }
    }
}
