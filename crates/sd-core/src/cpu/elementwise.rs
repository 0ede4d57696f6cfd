//! Activations and broadcasting binary ops.

use super::CpuTensor;
use crate::error::{Error, Result};

pub(crate) fn unary(_x: &CpuTensor, _op: crate::backend::UnaryOp) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn geglu(_x: &CpuTensor) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn binary(_a: &CpuTensor, _b: &CpuTensor, _op: crate::backend::BinaryOp) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn affine(_x: &CpuTensor, _mul: f32, _add: f32) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}
