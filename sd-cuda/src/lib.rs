//! sd-cuda: the CUDA backend for sd-core.
//!
//! [`CudaBackend`] implements [`sd_core::Backend`] on one NVIDIA GPU (compute capability 8.0,
//! Ampere, or newer) through [cudarc](https://docs.rs/cudarc): the driver API, NVRTC and cuBLAS,
//! all loaded at run time, so this crate builds anywhere and needs no CUDA toolkit to build.
//! At run time it needs the driver (libcuda), libnvrtc.so.12 and libcublas.so.12.
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

mod backend;
mod device;
pub mod kernels;
mod launch;
pub mod nvrtc;
mod ops;
mod tensor;

pub use backend::CudaBackend;
pub use device::{device_count, driver_present};
pub use tensor::CudaTensor;
