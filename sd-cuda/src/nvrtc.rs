//! Compiling the kernels with NVRTC, the CUDA runtime compiler (libnvrtc, loaded at run time).
//!
//! A device gets machine code for its exact architecture (`sm_XY`, a cubin): ptxas then runs at
//! compile time, so register and shared-memory limits are checked here and not at launch, and
//! the driver loads the code without a JIT. A device newer than the NVRTC library gets PTX for
//! the newest architecture NVRTC knows, which the driver finishes at load time.
//!
//! Compiled images are cached per process, keyed by file and target.

use std::collections::HashMap;
use std::ffi::{CString, c_char, c_int};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::nvrtc::sys;
use sd_core::{Error, Result};

use crate::kernels::{COMMON_HEADER, KernelFile};
use crate::libraries::{self, CudaLibrary};

/// The oldest architecture the kernels support: flash attention uses `mma.sync.m16n8k16` with
/// f32 accumulation and `cvt.rn.f16x2.f32`, both sm_80 (Ampere) and later.
pub const MIN_COMPUTE_CAPABILITY: (u32, u32) = (8, 0);

/// What NVRTC produces for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A cubin for `sm_XY`.
    Cubin { major: u32, minor: u32 },
    /// PTX for `compute_XY`, finished by the driver for a newer device.
    Ptx { major: u32, minor: u32 },
}

impl Target {
    /// NVRTC's `--gpu-architecture` value.
    pub fn arch(self) -> String {
        match self {
            Target::Cubin { major, minor } => format!("sm_{major}{minor}"),
            Target::Ptx { major, minor } => format!("compute_{major}{minor}"),
        }
    }
}

/// The target for a device of compute capability `device`, given the architectures NVRTC
/// supports (as NVRTC lists them: 80 for sm_80): the device's own when NVRTC knows it, else PTX
/// for the newest older one (PTX runs on any later device). `None` when NVRTC knows nothing as
/// old as the device, or the device is older than [`MIN_COMPUTE_CAPABILITY`].
pub fn choose_target(device: (u32, u32), supported: &[u32]) -> Option<Target> {
    let (major, minor) = device;
    if device < MIN_COMPUTE_CAPABILITY {
        return None;
    }
    let code = major * 10 + minor;
    if supported.contains(&code) {
        return Some(Target::Cubin { major, minor });
    }
    let min_code = MIN_COMPUTE_CAPABILITY.0 * 10 + MIN_COMPUTE_CAPABILITY.1;
    supported
        .iter()
        .copied()
        .filter(|&arch| arch <= code && arch >= min_code)
        .max()
        .map(|arch| Target::Ptx {
            major: arch / 10,
            minor: arch % 10,
        })
}

/// The result of one compilation.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// A cubin or a NUL-terminated PTX text, as the driver's module loader takes them.
    pub image: Vec<u8>,
    /// NVRTC's log: warnings, and with `--ptxas-options=-v` each kernel's registers, shared
    /// memory and spills.
    pub log: String,
}

/// Whether libnvrtc can be loaded ([`crate::libraries`] searches for it). Checked before any
/// NVRTC call: cudarc panics on a call into a library it cannot find.
pub fn nvrtc_present() -> bool {
    libraries::load(CudaLibrary::Nvrtc).is_ok()
}

fn require_nvrtc() -> Result<()> {
    libraries::load(CudaLibrary::Nvrtc)
        .map(drop)
        .map_err(|reason| Error::NoNvrtc { reason })
}

fn check(result: sys::nvrtcResult, what: &str) -> Result<()> {
    if result == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Backend {
            backend: "cuda",
            reason: format!("NVRTC {what}: {result:?}"),
        })
    }
}

/// NVRTC's version, `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    check(
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) },
        "version",
    )?;
    Ok((major, minor))
}

/// The architectures this NVRTC can compile for (80 = sm_80).
pub fn supported_archs() -> Result<Vec<u32>> {
    require_nvrtc()?;
    let mut count: c_int = 0;
    // SAFETY: a valid out-pointer.
    check(
        unsafe { sys::nvrtcGetNumSupportedArchs(&mut count) },
        "supported architectures",
    )?;
    let mut archs = vec![0 as c_int; usize::try_from(count).unwrap_or(0)];
    // SAFETY: `archs` holds the `count` entries NVRTC writes.
    check(
        unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) },
        "supported architectures",
    )?;
    Ok(archs
        .into_iter()
        .filter_map(|a| u32::try_from(a).ok())
        .collect())
}

/// An NVRTC program, destroyed on drop.
struct Program {
    handle: sys::nvrtcProgram,
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `handle` came from nvrtcCreateProgram and is destroyed once.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.handle) };
    }
}

impl Program {
    fn log(&self) -> String {
        let mut size = 0usize;
        // SAFETY: a live program and a valid out-pointer.
        if unsafe { sys::nvrtcGetProgramLogSize(self.handle, &mut size) }
            != sys::nvrtcResult::NVRTC_SUCCESS
        {
            return String::new();
        }
        let mut log = vec![0u8; size];
        // SAFETY: `log` has the `size` bytes NVRTC asked for.
        unsafe { sys::nvrtcGetProgramLog(self.handle, log.as_mut_ptr().cast::<c_char>()) };
        String::from_utf8_lossy(&log)
            .trim_end_matches('\0')
            .to_string()
    }

    fn image(&self, target: Target) -> Result<Vec<u8>> {
        let mut size = 0usize;
        let mut image;
        // SAFETY: a live, compiled program; each buffer has the size NVRTC reported.
        unsafe {
            match target {
                Target::Cubin { .. } => {
                    check(sys::nvrtcGetCUBINSize(self.handle, &mut size), "cubin size")?;
                    image = vec![0u8; size];
                    check(
                        sys::nvrtcGetCUBIN(self.handle, image.as_mut_ptr().cast::<c_char>()),
                        "cubin",
                    )?;
                }
                Target::Ptx { .. } => {
                    check(sys::nvrtcGetPTXSize(self.handle, &mut size), "PTX size")?;
                    image = vec![0u8; size];
                    check(
                        sys::nvrtcGetPTX(self.handle, image.as_mut_ptr().cast::<c_char>()),
                        "PTX",
                    )?;
                }
            }
        }
        Ok(image)
    }
}

fn c_string(text: &str, what: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::Backend {
        backend: "cuda",
        reason: format!("{what} contains a NUL byte"),
    })
}

/// Compile one kernel file for `target`, with extra NVRTC options (e.g. `--ptxas-options=-v`).
/// A compile error is an [`Error::Backend`] carrying NVRTC's log.
pub fn compile(file: KernelFile, target: Target, extra_options: &[&str]) -> Result<Compiled> {
    compile_source(file.name(), file.source(), target, extra_options)
}

/// Compile a CUDA C source that may include `common.cuh`; [`compile`] for the embedded files.
pub fn compile_source(
    name: &str,
    source: &str,
    target: Target,
    extra_options: &[&str],
) -> Result<Compiled> {
    require_nvrtc()?;
    let source_c = c_string(source, name)?;
    let name_c = c_string(name, "kernel file name")?;
    let header_c = c_string(COMMON_HEADER.1, COMMON_HEADER.0)?;
    let header_name_c = c_string(COMMON_HEADER.0, "header name")?;
    let headers = [header_c.as_ptr()];
    let header_names = [header_name_c.as_ptr()];

    let mut handle: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a NUL-terminated string that outlives the program
    // (NVRTC copies the sources at creation).
    check(
        unsafe {
            sys::nvrtcCreateProgram(
                &mut handle,
                source_c.as_ptr(),
                name_c.as_ptr(),
                1,
                headers.as_ptr(),
                header_names.as_ptr(),
            )
        },
        "create program",
    )?;
    let program = Program { handle };

    let mut options = vec![format!("--gpu-architecture={}", target.arch())];
    options.push("--std=c++17".to_string());
    options.extend(extra_options.iter().map(|o| o.to_string()));
    let options_c = options
        .iter()
        .map(|o| c_string(o, "NVRTC option"))
        .collect::<Result<Vec<_>>>()?;
    let option_ptrs: Vec<*const c_char> = options_c.iter().map(|o| o.as_ptr()).collect();
    let option_count = c_int::try_from(option_ptrs.len()).unwrap_or(c_int::MAX);
    // SAFETY: a live program and `option_count` valid option strings.
    let compiled =
        unsafe { sys::nvrtcCompileProgram(program.handle, option_count, option_ptrs.as_ptr()) };
    let log = program.log();
    if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Backend {
            backend: "cuda",
            reason: format!(
                "NVRTC could not compile {name} for {} ({compiled:?}):\n{log}",
                target.arch()
            ),
        });
    }
    Ok(Compiled {
        image: program.image(target)?,
        log,
    })
}

/// [`compile`] once per process for each (file, target).
pub(crate) fn compile_cached(file: KernelFile, target: Target) -> Result<Arc<Vec<u8>>> {
    type Cache = Mutex<HashMap<(KernelFile, Target), Arc<Vec<u8>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    // The lock is held while compiling, so two threads never compile the same file twice.
    // A panic elsewhere cannot leave the map half-written, so a poisoned lock is still usable.
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(image) = cache.get(&(file, target)) {
        return Ok(image.clone());
    }
    let image = Arc::new(compile(file, target, &[])?.image);
    cache.insert((file, target), image.clone());
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::{Target, choose_target};

    const NVRTC_12_9: [u32; 14] = [50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90];

    #[test]
    fn a_device_nvrtc_knows_gets_its_own_machine_code() {
        assert_eq!(
            choose_target((9, 0), &NVRTC_12_9),
            Some(Target::Cubin { major: 9, minor: 0 })
        );
        assert_eq!(
            choose_target((8, 6), &NVRTC_12_9),
            Some(Target::Cubin { major: 8, minor: 6 })
        );
    }

    #[test]
    fn a_device_newer_than_nvrtc_gets_ptx_for_the_newest_older_arch() {
        assert_eq!(
            choose_target((12, 0), &NVRTC_12_9),
            Some(Target::Ptx { major: 9, minor: 0 })
        );
        assert_eq!(
            choose_target((8, 8), &NVRTC_12_9),
            Some(Target::Ptx { major: 8, minor: 7 })
        );
    }

    #[test]
    fn devices_before_ampere_or_unknown_to_nvrtc_get_nothing() {
        assert_eq!(choose_target((7, 5), &NVRTC_12_9), None);
        assert_eq!(choose_target((9, 0), &[75]), None);
        assert_eq!(choose_target((9, 0), &[]), None);
    }

    #[test]
    fn arch_options_name_machine_code_or_virtual_arch() {
        assert_eq!(Target::Cubin { major: 9, minor: 0 }.arch(), "sm_90");
        assert_eq!(Target::Ptx { major: 8, minor: 0 }.arch(), "compute_80");
    }
}
