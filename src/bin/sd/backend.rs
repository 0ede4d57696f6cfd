//! Choosing a backend: each command is written once over `B: Backend` and instantiated here.
//! Without a usable GPU, `--backend cuda` fails with sd-cuda's typed error (no CUDA device, or
//! no NVRTC), naming the reason; a build without the `cuda` feature refuses it.

/// Run `$body` with `$b` bound to the backend `$kind` names (GPU 0 for CUDA, f16 storage) at
/// CPU precision `$precision` (bf16 is refused for CUDA, which has its own f16 storage).
macro_rules! with_backend {
    ($kind:expr, $precision:expr, |$b:ident| $body:expr) => {
        match ($kind, $precision) {
            ($crate::cli::BackendKind::Cpu, precision) => {
                let $b = sd_core::cpu::CpuBackend::with_precision(precision.into());
                $body
            }
            #[cfg(any(feature = "cuda", feature = "cuda-13"))]
            (
                $crate::cli::BackendKind::Cuda,
                $crate::cli::PrecisionArg::F32 | $crate::cli::PrecisionArg::Auto,
            ) => {
                let $b = sd_cuda::CudaBackend::new(0)?;
                $body
            }
            #[cfg(not(any(feature = "cuda", feature = "cuda-13")))]
            (
                $crate::cli::BackendKind::Cuda,
                $crate::cli::PrecisionArg::F32 | $crate::cli::PrecisionArg::Auto,
            ) => {
                return Err(sd_core::Error::invalid_argument(
                    "--backend",
                    "this sd was built without the `cuda` feature (cargo build --features cuda)",
                ));
            }
            ($crate::cli::BackendKind::Cuda, $crate::cli::PrecisionArg::Bf16) => {
                return Err(sd_core::Error::invalid_argument(
                    "--precision",
                    "bf16 is a CPU precision; the CUDA backend stores f16 and computes in f32",
                ));
            }
        }
    };
}
pub(crate) use with_backend;
