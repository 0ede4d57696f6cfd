//! sd-cuda: the CUDA backend for sd-core.
//!
//! [`CudaBackend`] implements [`sd_core::Backend`] on one NVIDIA GPU (compute capability 8.0,
//! Ampere, or newer) through [cudarc](https://docs.rs/cudarc): the driver API, NVRTC and cuBLAS,
//! all loaded at run time, so this crate builds anywhere and needs no CUDA toolkit to build.
//! At run time it needs the driver (libcuda), NVRTC and cuBLAS of the CUDA major version the
//! build binds: CUDA 12 by default (`libnvrtc.so.12`, `libcublas.so.12`), CUDA 13 with the
//! `cuda-13` feature and `default-features = false` (cudarc's API bindings are per version, so
//! one binary serves one major). [`libraries`] finds them on the loader path, in a toolkit
//! (`CUDA_PATH`, `/usr/local/cuda`), in a Python environment's NVIDIA wheels (next to PyTorch),
//! or in `SD_CUDA_LIBRARY_PATH`, and when one is missing the error lists every place it looked.
//!
//! ```no_run
//! use sd_core::{Backend, Error};
//! use sd_cuda::CudaBackend;
//!
//! match CudaBackend::new(0) {
//!     Ok(gpu) => println!("running on {}", gpu.device_name()),
//!     Err(Error::NoCudaDevice { reason } | Error::NoNvrtc { reason }) => {
//!         println!("no GPU ({reason}); using the CPU backend")
//!     }
//!     Err(other) => panic!("{other}"),
//! }
//! ```
//!
//! # Numerics
//!
//! Tensors are stored as f16 ([`CudaBackend::new`]) or f32 ([`CudaBackend::with_dtype`]); all
//! arithmetic is f32 (cuBLAS with `CUBLAS_COMPUTE_32F`, kernels convert on load and store).
//! Norm statistics accumulate in f64, as on the CPU backend. The f32 mode exists to compare
//! against the CPU backend op by op.
//!
//! # Kernels
//!
//! CUDA C in `kernels/*.cu` ([`kernels`]), embedded in the binary and compiled by NVRTC
//! ([`nvrtc`]) at first use to machine code for the device, once per process. They include no
//! toolkit headers. GEMMs (linear, matmul, convolutions after im2col) go to cuBLAS; attention in
//! f16 runs a tensor-core flash kernel (`mma.sync`) that never materialises the score matrix.
//! (`tools/flash_attention_model.py` replays that kernel's fragment indexing in numpy.)
//!
//! # Tests without a GPU
//!
//! - `tests/kernels_compile.rs` compiles every kernel for sm_80 and sm_90 with NVRTC (no GPU
//!   needed) and fails on compile errors and register spills. It skips, printing why, when
//!   libnvrtc.so.12 is not on the loader path, unless `REQUIRE_NVRTC=1`. `.ci/nvrtc.sh` fetches
//!   NVRTC from PyPI: `eval "$(.ci/nvrtc.sh)"`.
//! - `tests/no_device.rs`: a machine without a device gets a typed error, not a panic.
//! - `tests/ops_vs_cpu.rs` (every op vs the CPU backend, random shapes, f32 and f16) and
//!   `tests/clip_on_cuda.rs` (the tiny fixture CLIP end to end) need a device; without one they
//!   print "skipped" and pass, which says nothing about the GPU. `REQUIRE_CUDA=1` makes them fail
//!   instead.

#[cfg(all(feature = "cuda-12", feature = "cuda-13"))]
compile_error!(
    "sd-cuda: enable one of the features `cuda-12` and `cuda-13` (use `default-features = false` \
     with `cuda-13`)"
);

mod backend;
mod device;
pub mod kernels;
mod launch;
pub mod libraries;
pub mod nvrtc;
mod ops;
mod tensor;

pub use backend::CudaBackend;
pub use device::{device_count, driver_present};
pub use tensor::CudaTensor;
