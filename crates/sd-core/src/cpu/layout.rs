//! Reshape, permute, narrow, concat, upsample and embedding.

use super::CpuTensor;
use crate::error::{Error, Result};

pub(crate) fn reshape(_x: &CpuTensor, _shape: &[usize]) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn permute(_x: &CpuTensor, _axes: &[usize]) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn narrow(_x: &CpuTensor, _axis: usize, _start: usize, _len: usize) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn concat(_xs: &[&CpuTensor], _axis: usize) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn upsample_nearest2x(_x: &CpuTensor) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}

pub(crate) fn embedding(_table: &CpuTensor, _ids: &[u32], _ids_shape: &[usize]) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}
