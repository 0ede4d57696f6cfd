//! conv2d via im2col + GEMM.

use super::CpuTensor;
use crate::error::{Error, Result};

pub(crate) fn conv2d(
    _x: &CpuTensor,
    _w: &CpuTensor,
    _bias: Option<&CpuTensor>,
    _params: crate::backend::Conv2dParams,
) -> Result<CpuTensor> {
    Err(Error::Backend {
        backend: "cpu",
        reason: "op not implemented yet".into(),
    })
}
