//! Batched matmul and linear layers over the GEMM engine.

use super::CpuTensor;
use crate::error::{Error, Result};

pub(crate) fn matmul(_a: &CpuTensor, _b: &CpuTensor) -> Result<CpuTensor> {
    Err(Error::Backend {
        backend: "cpu",
        reason: "op not implemented yet".into(),
    })
}

pub(crate) fn linear(
    _x: &CpuTensor,
    _w: &CpuTensor,
    _bias: Option<&CpuTensor>,
) -> Result<CpuTensor> {
    Err(Error::Backend {
        backend: "cpu",
        reason: "op not implemented yet".into(),
    })
}
