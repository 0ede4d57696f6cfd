//! The GEMM engine used by linalg, conv and attention (chosen by measurement; see benches/gemm.rs).
