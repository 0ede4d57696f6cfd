//! Test helpers shared by the workspace's crates (a dev-dependency, never published): the
//! committed tiny pipelines under `fixtures/`, their diffusers goldens, the tolerance golden
//! comparisons use, and the process statistics the examples print ([`process`]).

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

pub mod process;

use std::path::{Path, PathBuf};

use sd_core::cpu::{CpuBackend, CpuTensor};
use sd_core::weights::SafetensorsFile;
use sd_core::{Backend, HostTensor};

/// diffusers f32 vs our f32 on one model call (the acceptance bound).
pub const GOLDEN_MAX_ABS: f32 = 1e-4;

/// The environment for `sd` runs whose images are compared with the (f32) goldens: the CPU
/// features capped below avx512_bf16, so that `--precision auto` (the default) means f32 on
/// every CPU (it picks bf16 where the CPU has avx512_bf16).
pub const AUTO_MEANS_F32: (&str, &str) = ("SD_CPU_FEATURES", "avx512");

/// The workspace's `fixtures/` folder (committed tiny models and goldens): `$SD_FIXTURES` when
/// set (test binaries run away from their build tree, as tools/gpu_check.sh runs them on a GPU
/// machine), else the folder next to these sources.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("SD_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
    }
}

/// A tiny diffusers pipeline folder (`tiny-sd`, `tiny-sd-alt`, `tiny-sd-inpaint`).
pub fn pipeline(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// The LDM single-file twin of `tiny-sd`.
pub fn ldm_single_file() -> PathBuf {
    fixtures().join("ldm/tiny-sd.safetensors")
}

/// A golden file, `fixtures/goldens/<model>/<file>`.
#[derive(Debug)]
pub struct Goldens {
    file: SafetensorsFile,
}

impl Goldens {
    pub fn open(model: &str, file: &str) -> Self {
        let path = fixtures().join("goldens").join(model).join(file);
        Goldens {
            file: SafetensorsFile::open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    pub fn host(&self, key: &str) -> HostTensor {
        self.file.get(key).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    pub fn tensor(&self, key: &str) -> CpuTensor {
        CpuBackend::new().upload(&self.host(key)).unwrap()
    }

    pub fn scalar(&self, key: &str) -> f32 {
        let t = self.host(key);
        assert_eq!(t.len(), 1, "{key} is not a scalar");
        t.iter().copied().next().unwrap()
    }

    /// A `__metadata__` entry of the file.
    pub fn metadata(&self, key: &str) -> String {
        self.file
            .metadata()
            .get(key)
            .unwrap_or_else(|| panic!("no metadata {key}"))
            .clone()
    }

    /// The case names (`<case>/...` prefixes) in the file, sorted.
    pub fn cases(&self) -> Vec<String> {
        let mut cases: Vec<String> = self
            .file
            .names()
            .filter_map(|k| k.split_once('/').map(|(case, _)| case.to_string()))
            .collect();
        cases.sort();
        cases.dedup();
        cases
    }
}

/// Largest absolute difference, after checking the shapes agree.
pub fn max_abs_diff(ours: &CpuTensor, expected: &HostTensor) -> f32 {
    let ours = CpuBackend::new().download(ours).unwrap();
    assert_eq!(ours.shape(), expected.shape(), "shape");
    ours.iter()
        .zip(expected.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Assert `ours` is within [`GOLDEN_MAX_ABS`] of `expected`, printing the error either way.
pub fn assert_matches_golden(what: &str, ours: &CpuTensor, expected: &HostTensor) {
    let err = max_abs_diff(ours, expected);
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("{what}: max abs error {err:.3e} (max |golden| {scale:.3})");
    assert!(
        err <= GOLDEN_MAX_ABS,
        "{what}: max abs error {err:e} exceeds {GOLDEN_MAX_ABS:e}"
    );
}

/// The folder `tools/full_size_goldens.py write` fills (`SD_FULL_SIZE_DIR`, default
/// `sd-full-size` in the system temp folder): full-size SD 1.5 UNet and VAE with random weights and their goldens.
pub fn full_size_dir() -> PathBuf {
    std::env::var_os("SD_FULL_SIZE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sd-full-size"))
}

/// The full-size goldens, or a panic saying how to make them.
pub fn full_size_goldens() -> Goldens {
    let path = full_size_dir().join("goldens.safetensors");
    assert!(
        path.is_file(),
        "{} is missing: run `python tools/full_size_goldens.py write` first",
        path.display()
    );
    Goldens {
        file: SafetensorsFile::open(&path).unwrap(),
    }
}

/// The GPU backend a test opened, or `None` (after printing why) where this machine has no
/// usable device — a skip that verifies nothing about the GPU. With `REQUIRE_CUDA=1` (set by
/// tools/gpu_check.sh on a GPU machine) a missing device fails the test instead. Other errors
/// are failures.
pub fn gpu_or_skip<G>(opened: sd_core::Result<G>, describe: impl Fn(&G) -> String) -> Option<G> {
    match opened {
        Ok(gpu) => {
            eprintln!("running on {}", describe(&gpu));
            Some(gpu)
        }
        Err(sd_core::Error::NoCudaDevice { reason } | sd_core::Error::NoNvrtc { reason }) => {
            let required = std::env::var("REQUIRE_CUDA").is_ok_and(|v| v == "1");
            assert!(!required, "REQUIRE_CUDA=1 but: {reason}");
            eprintln!("skipped: no CUDA device ({reason}); not a GPU verification");
            None
        }
        Err(other) => panic!("opening the CUDA backend failed: {other}"),
    }
}
