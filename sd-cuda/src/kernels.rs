//! The CUDA C sources of the kernels, embedded in the binary.
//!
//! Each file in `kernels/` is one NVRTC program; they share `common.cuh`, which NVRTC is handed
//! as an in-memory header, so no CUDA toolkit headers are needed at run time. Kernels exist in an
//! `_f32` and an `_f16` form (the storage type; arithmetic is f32 in both), except flash
//! attention, which is f16 only (`flash_attention_d<D>`, D the head dim rounded up to 16).

/// The header every kernel file includes as `#include "common.cuh"`.
pub const COMMON_HEADER: (&str, &str) = ("common.cuh", include_str!("../kernels/common.cuh"));

/// One NVRTC program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelFile {
    /// Activations, GEGLU, affine, broadcasting binary ops, bias add.
    Elementwise,
    /// Permute, transpose, narrow/concat copies, upsample, embedding, im2col.
    Layout,
    /// Group norm (+SiLU), layer norm, softmax, attention's fallback softmax.
    Norm,
    /// Tensor-core flash attention.
    Attention,
}

impl KernelFile {
    /// Every program, for the compile test and for warming the cache.
    pub const ALL: [KernelFile; 4] = [
        KernelFile::Elementwise,
        KernelFile::Layout,
        KernelFile::Norm,
        KernelFile::Attention,
    ];

    /// The file name (NVRTC reports errors against it).
    pub fn name(self) -> &'static str {
        match self {
            KernelFile::Elementwise => "elementwise.cu",
            KernelFile::Layout => "layout.cu",
            KernelFile::Norm => "norm.cu",
            KernelFile::Attention => "attention.cu",
        }
    }

    /// The CUDA C source.
    pub fn source(self) -> &'static str {
        match self {
            KernelFile::Elementwise => include_str!("../kernels/elementwise.cu"),
            KernelFile::Layout => include_str!("../kernels/layout.cu"),
            KernelFile::Norm => include_str!("../kernels/norm.cu"),
            KernelFile::Attention => include_str!("../kernels/attention.cu"),
        }
    }
}
