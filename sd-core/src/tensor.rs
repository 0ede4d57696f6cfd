//! Host tensors and element types.

/// The host-side tensor: an f32 n-d array in standard (row-major) layout.
///
/// Everything crossing the host/device boundary (`Backend::upload`/`download`), the scheduler
/// latents and weights read from safetensors are host tensors. 16-bit storage is a backend concern.
pub type HostTensor = ndarray::ArrayD<f32>;

/// Element type of a backend tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

/// The number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}
