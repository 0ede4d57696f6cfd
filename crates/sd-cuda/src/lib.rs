//! The CUDA backend for sd-core: cudarc, NVRTC-compiled kernels and cuBLAS (issue 7: not yet implemented).
