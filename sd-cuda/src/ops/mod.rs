//! The ops of [`CudaBackend`](crate::CudaBackend), one file per family. Each checks shapes
//! first (the same errors as the CPU backend), then launches kernels on the backend's stream.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod gemm;
pub(crate) mod layout;
pub(crate) mod linalg;
pub(crate) mod norm;
