//! Choosing a backend: each command is written once over `B: Backend` and instantiated here.
//! Without a usable GPU, `--backend cuda` fails with sd-cuda's typed error (no CUDA device, or
//! no NVRTC), naming the reason.

/// Run `$body` with `$b` bound to the backend `$kind` names (GPU 0 for CUDA, f16 storage).
macro_rules! with_backend {
    ($kind:expr, |$b:ident| $body:expr) => {
        match $kind {
            $crate::cli::BackendKind::Cpu => {
                let $b = sd_core::cpu::CpuBackend::new();
                $body
            }
            $crate::cli::BackendKind::Cuda => {
                let $b = sd_cuda::CudaBackend::new(0)?;
                $body
            }
        }
    };
}
pub(crate) use with_backend;
