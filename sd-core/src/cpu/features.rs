//! Which instruction-set extensions the CPU backend's own kernels may use, detected once at run
//! time and capped by the `SD_CPU_FEATURES` environment variable.
//!
//! The crate is built for baseline x86-64; the kernels that gain from wider vectors are compiled
//! a second time for AVX2+FMA and for AVX-512 (`target_feature`) and picked here. The cap lets an
//! AVX-512 machine run the AVX2 paths, to measure what a CPU without AVX-512 gets:
//!
//! | `SD_CPU_FEATURES` | kernels used |
//! |---|---|
//! | unset, `native` | everything the CPU has (AMX too, where Linux grants it) |
//! | `avx512_bf16` | AVX-512 with `VDPBF16PS`, no AMX |
//! | `avx2` | AVX2 + FMA at most (no AVX-512, so no `VDPBF16PS`) |
//! | `avx512` | AVX-512F/BW at most (no avx512_bf16) |
//! | `baseline` | the baseline build only (SSE2) |
//!
//! An unknown value is ignored with a warning on stderr (the backend must still run). The
//! f32 GEMM engine (the `gemm` crate, built with its `x86-v4` feature) picks its own kernels at
//! run time, AVX-512 where the CPU has it, whatever the cap says. On an Intel Xeon with AMX
//! (two 512-bit FMA units per core) its AVX-512 kernels took the f32 UNet step's linears from
//! 3.80 / 3.56 s to 2.36 / 2.32 s and its 3×3 convs from 2.86 / 2.50 s to 2.01 / 1.93 s (`sd
//! bench --component unet --precision f32 --runs 1 --profile`, two interleaved pairs of
//! binaries); on a Zen 4, whose AVX-512 units are 256 bits wide, they neither gained nor lost
//! (linears 3.13 / 2.86 s against 2.78 / 2.99 s).

use std::sync::OnceLock;

/// The extensions the backend's kernels use on this CPU (after the `SD_CPU_FEATURES` cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuFeatures {
    /// AVX2 and FMA: 8-lane f32 loops.
    pub avx2_fma: bool,
    /// AVX-512F and AVX-512BW: 16-lane f32 loops and the bf16 packing shuffles.
    pub avx512: bool,
    /// AVX-512 BF16 (`VDPBF16PS`): bf16 products with f32 accumulation.
    pub avx512_bf16: bool,
    /// AMX-BF16 (`TDPBF16PS` on 16-row tiles), with the kernel's permission to use the tile
    /// registers (Linux only): the bf16 products' kernel where present.
    pub amx_bf16: bool,
}

/// Whether the environment variable `name` is set to `off`, `0` or `false`: the A/B switches
/// (`SD_WINOGRAD`, `SD_ATTENTION_KERNELS`) that put a fast path back on the plain one. Callers
/// read it once (a `getenv` per call showed up in profiles).
pub(crate) fn switched_off(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("off" | "0" | "false"))
}

/// The environment variable that caps [`CpuFeatures::get`].
pub const FEATURES_ENV: &str = "SD_CPU_FEATURES";

impl CpuFeatures {
    /// The features in use: detected once, then capped by `SD_CPU_FEATURES`.
    pub fn get() -> CpuFeatures {
        static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
        *FEATURES.get_or_init(|| {
            let detected = Self::detect();
            match std::env::var(FEATURES_ENV) {
                Ok(cap) => detected.capped(&cap).unwrap_or_else(|| {
                    eprintln!(
                        "warning: {FEATURES_ENV}={cap:?} is not one of native, avx512_bf16, avx512, avx2, \
                         baseline; using every feature the CPU has"
                    );
                    detected
                }),
                Err(_) => detected,
            }
        })
    }

    /// What the CPU supports, uncapped.
    pub fn detect() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2_fma = has!("avx2") && has!("fma");
            let avx512 = avx2_fma && has!("avx512f") && has!("avx512bw");
            let avx512_bf16 = avx512 && has!("avx512bf16");
            CpuFeatures {
                avx2_fma,
                avx512,
                avx512_bf16,
                amx_bf16: avx512_bf16 && amx::usable(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        CpuFeatures::default()
    }

    /// These features capped at the level `cap` names (see the module docs); `None` for a name
    /// that is not a level.
    pub fn capped(self, cap: &str) -> Option<CpuFeatures> {
        let level = match cap.trim().to_ascii_lowercase().as_str() {
            "" | "native" => return Some(self),
            "avx512_bf16" | "avx512bf16" => 3,
            "avx512" => 2,
            "avx2" => 1,
            "baseline" | "portable" | "none" => 0,
            _ => return None,
        };
        Some(CpuFeatures {
            avx2_fma: self.avx2_fma && level >= 1,
            avx512: self.avx512 && level >= 2,
            avx512_bf16: self.avx512_bf16 && level >= 3,
            amx_bf16: false,
        })
    }

    /// The features as a short list for reports, e.g. `avx2 fma` or `baseline`.
    pub fn describe(self) -> String {
        let names: Vec<&str> = [
            (self.avx2_fma, "avx2 fma"),
            (self.avx512, "avx512f avx512bw"),
            (self.avx512_bf16, "avx512_bf16"),
            (self.amx_bf16, "amx_bf16"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|&(_, name)| name)
        .collect();
        if names.is_empty() {
            "baseline".to_string()
        } else {
            names.join(" ")
        }
    }
}

/// AMX detection. The tile registers are off for a new process: Linux hands them out on
/// request (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, process-wide), and a tile
/// instruction without that permission faults.
#[cfg(target_arch = "x86_64")]
mod amx {
    /// Whether the CPU has AMX-TILE and AMX-BF16 and the kernel granted this process the tile
    /// data (asked here, once per process; asking again is harmless).
    pub(super) fn usable() -> bool {
        // Leaf 7 exists on every CPU with AVX-512, which the caller checked.
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
        amx_bf16 && amx_tile && granted()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn granted() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these arguments only changes the process's permissions.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }

    // Elsewhere (other systems, or Linux without the libc crate's glibc build here) AMX stays
    // off: the VDPBF16PS kernel runs instead.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn granted() -> bool {
        false
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod amx {
    pub(super) fn usable() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::CpuFeatures;

    const ALL: CpuFeatures = CpuFeatures {
        avx2_fma: true,
        avx512: true,
        avx512_bf16: true,
        amx_bf16: true,
    };

    #[test]
    fn caps_turn_off_the_levels_above_them() {
        assert_eq!(ALL.capped("native"), Some(ALL));
        assert_eq!(
            ALL.capped(" AVX2 ").map(|f| f.describe()).as_deref(),
            Some("avx2 fma")
        );
        assert_eq!(
            ALL.capped("avx512").map(|f| f.describe()).as_deref(),
            Some("avx2 fma avx512f avx512bw")
        );
        assert_eq!(
            ALL.capped("avx512_bf16").map(|f| f.describe()).as_deref(),
            Some("avx2 fma avx512f avx512bw avx512_bf16")
        );
        assert_eq!(ALL.capped("baseline"), Some(CpuFeatures::default()));
        assert_eq!(CpuFeatures::default().describe(), "baseline");
        assert_eq!(ALL.capped("sse9"), None);
        // A cap never adds what the CPU lacks.
        assert_eq!(
            CpuFeatures::default().capped("avx512"),
            Some(CpuFeatures::default())
        );
    }
}
