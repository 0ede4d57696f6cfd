//! Blockwise (online-softmax) scaled dot-product attention.

use super::CpuTensor;
use crate::error::{Error, Result};

pub(crate) fn attention(_q: &CpuTensor, _k: &CpuTensor, _v: &CpuTensor, _heads: usize, _scale: f32, _causal: bool) -> Result<CpuTensor> {
    Err(Error::Backend { backend: "cpu", reason: "op not implemented yet".into() })
}
