//! Every kernel file compiles with NVRTC to machine code for sm_80 (A100) and sm_90 (H100).
//!
//! Runs without a GPU: NVRTC and ptxas need none. Compiling to `sm_XY` (not `compute_XY`) runs
//! ptxas, which rejects kernels that use more registers or shared memory than the architecture
//! has; the test also fails on any register spill, which ptxas only reports.
//!
//! Without libnvrtc on the loader path the test prints why and passes, unless `REQUIRE_NVRTC=1`
//! (CI sets it after `.ci/nvrtc.sh`), when it fails.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_cuda::kernels::KernelFile;
use sd_cuda::nvrtc::{self, Target};

const ARCHS: [Target; 2] = [
    Target::Cubin { major: 8, minor: 0 },
    Target::Cubin { major: 9, minor: 0 },
];

/// True when the test should run; prints the reason and returns false when it should skip.
fn nvrtc_or_skip() -> bool {
    if nvrtc::nvrtc_present() {
        return true;
    }
    let required = std::env::var("REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "REQUIRE_NVRTC=1 but libnvrtc.so.12 is not on the loader path (run `eval \"$(.ci/nvrtc.sh)\"`)"
    );
    eprintln!("skipped: libnvrtc.so.12 not found (set LD_LIBRARY_PATH, see .ci/nvrtc.sh)");
    false
}

/// `(kernel, bytes)` for every kernel whose ptxas report shows spill stores.
fn spills(ptxas_log: &str) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut kernel = String::new();
    for line in ptxas_log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            kernel = rest.split('\'').next().unwrap_or_default().to_string();
        }
        if let Some(before) = line.split(" bytes spill stores").next()
            && line.contains(" bytes spill stores")
        {
            let bytes = before
                .rsplit(',')
                .next()
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            if bytes > 0 {
                found.push((kernel.clone(), bytes));
            }
        }
    }
    found
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = nvrtc::version().expect("NVRTC version");
    eprintln!("NVRTC {major}.{minor}");
    // This build binds one CUDA major (the `cuda-12` / `cuda-13` feature) and must have loaded
    // that major's NVRTC (CI runs this test under each).
    assert_eq!(
        u32::try_from(major).ok(),
        Some(sd_cuda::libraries::CUDA_MAJOR),
        "NVRTC {major}.{minor} loaded by a build for CUDA {}",
        sd_cuda::libraries::CUDA_MAJOR
    );
    let mut failures = Vec::new();
    for target in ARCHS {
        for file in KernelFile::ALL {
            match nvrtc::compile(file, target, &["--ptxas-options=-v"]) {
                Ok(compiled) => {
                    let entries = compiled.log.matches("Compiling entry function").count();
                    eprintln!(
                        "{} for {}: {} kernels, {} bytes of machine code",
                        file.name(),
                        target.arch(),
                        entries,
                        compiled.image.len()
                    );
                    for (kernel, bytes) in spills(&compiled.log) {
                        failures.push(format!(
                            "{} for {}: {kernel} spills {bytes} bytes to local memory",
                            file.name(),
                            target.arch()
                        ));
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_broken_kernel_is_reported_with_the_compiler_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let source =
        "#include \"common.cuh\"\nextern \"C\" __global__ void k(float* x) { x[0] = 1.0f }\n";
    let err = nvrtc::compile_source("broken.cu", source, ARCHS[0], &[]).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("broken.cu"), "{message}");
    assert!(message.contains("expected a \";\""), "{message}");
}

#[test]
fn a_kernel_over_the_shared_memory_limit_fails_in_ptxas() {
    if !nvrtc_or_skip() {
        return;
    }
    // 64 KiB of static shared memory: more than the 48 KiB a kernel may declare statically.
    let source = "extern \"C\" __global__ void k(float* x) {\n\
                  __shared__ float s[16384]; s[threadIdx.x] = x[threadIdx.x]; __syncthreads();\n\
                  x[threadIdx.x] = s[threadIdx.x + 1]; }\n";
    let err = nvrtc::compile_source("big.cu", source, ARCHS[1], &[]).unwrap_err();
    assert!(err.to_string().contains("too much shared data"), "{err}");
}

#[test]
fn spill_reports_are_parsed() {
    let log = "ptxas info    : Compiling entry function 'a' for 'sm_80'\n\
               ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
               ptxas info    : Compiling entry function 'b' for 'sm_80'\n\
               ptxas         .     16 bytes stack frame, 12 bytes spill stores, 12 bytes spill loads\n";
    assert_eq!(spills(log), vec![("b".to_string(), 12)]);
}
