//! Choosing a backend: each command is written once over `B: Backend` and instantiated here.

use sd_core::Error;

use crate::cli::BackendKind;

/// Why a backend cannot run in this build.
pub fn unavailable(kind: BackendKind) -> Error {
    Error::Backend {
        backend: match kind {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        },
        reason: "not available in this build (the CUDA backend, sd-cuda, is not implemented yet); \
                 use --backend cpu"
            .to_string(),
    }
}

/// Run `$body` with `$b` bound to the backend `$kind` names.
macro_rules! with_backend {
    ($kind:expr, |$b:ident| $body:expr) => {
        match $kind {
            $crate::cli::BackendKind::Cpu => {
                let $b = sd_core::cpu::CpuBackend::new();
                $body
            }
            kind @ $crate::cli::BackendKind::Cuda => Err($crate::backend::unavailable(kind)),
        }
    };
}
pub(crate) use with_backend;
