//! sd-cuda: the CUDA backend for sd-core.
//!
//! Kernel sources live in `kernels/*.cu` ([`kernels`]) and are compiled by NVRTC ([`nvrtc`])
//! at first use for the device's architecture.

pub mod kernels;
pub mod nvrtc;
