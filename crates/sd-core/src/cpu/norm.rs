//! Group norm (optionally fused with SiLU), layer norm and softmax.

use super::CpuTensor;
use crate::error::{Error, Result};

pub(crate) fn group_norm(_x: &CpuTensor, _groups: usize, _gamma: &CpuTensor, _beta: &CpuTensor, _eps: f32, _silu: bool) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn layer_norm(_x: &CpuTensor, _gamma: &CpuTensor, _beta: &CpuTensor, _eps: f32) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn softmax(_x: &CpuTensor) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}
