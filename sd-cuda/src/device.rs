//! Finding and opening a CUDA device without ever panicking.
//!
//! cudarc loads libcuda, libnvrtc and libcublas at run time and panics on the first call into
//! a library it cannot find, so each library's presence is checked first. Every driver call
//! after that returns an error, and the whole opening runs under `catch_unwind` as well, so a
//! surprise inside cudarc (a driver too old to export a symbol it binds) still becomes
//! [`Error::NoCudaDevice`] rather than a crash.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaStream};
use sd_core::{Error, Result};

use crate::libraries::{self, CudaLibrary};
use crate::nvrtc::{self, MIN_COMPUTE_CAPABILITY, Target};

/// An opened device: its context, the one stream all work goes to, and a cuBLAS handle bound
/// to that stream.
#[derive(Debug)]
pub(crate) struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    pub target: Target,
    pub name: String,
    /// Streaming multiprocessors: grids are sized to a few blocks per SM.
    pub sm_count: u32,
}

fn no_device(reason: impl Into<String>) -> Error {
    Error::NoCudaDevice {
        reason: reason.into(),
    }
}

/// Whether libcuda (the NVIDIA driver's user-space library) can be loaded.
pub fn driver_present() -> bool {
    libraries::load(CudaLibrary::Driver).is_ok()
}

/// The number of CUDA devices; 0 without a driver or without devices. Never panics.
pub fn device_count() -> usize {
    if !driver_present() {
        return 0;
    }
    catch_unwind(CudaContext::device_count)
        .ok()
        .and_then(|count| count.ok())
        .and_then(|count| usize::try_from(count).ok())
        .unwrap_or(0)
}

pub(crate) fn open(ordinal: usize) -> Result<Device> {
    match catch_unwind(AssertUnwindSafe(|| open_checked(ordinal))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown cause");
            Err(no_device(format!(
                "opening device {ordinal} failed inside cudarc: {what}"
            )))
        }
    }
}

fn open_checked(ordinal: usize) -> Result<Device> {
    libraries::load(CudaLibrary::Driver).map_err(no_device)?;
    let count = CudaContext::device_count()
        .map_err(|e| no_device(format!("the driver found no usable device: {e}")))?;
    let count = usize::try_from(count).unwrap_or(0);
    if ordinal >= count {
        return Err(no_device(format!(
            "device {ordinal} asked for, but the driver sees {count} device(s)"
        )));
    }
    let ctx = CudaContext::new(ordinal)
        .map_err(|e| no_device(format!("cannot create a context on device {ordinal}: {e}")))?;
    let name = ctx.name().unwrap_or_else(|_| format!("device {ordinal}"));
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| no_device(format!("{name}: cannot read its compute capability: {e}")))?;
    let capability = (
        u32::try_from(major).unwrap_or(0),
        u32::try_from(minor).unwrap_or(0),
    );
    if capability < MIN_COMPUTE_CAPABILITY {
        return Err(no_device(format!(
            "{name} has compute capability {major}.{minor}; sd-cuda's kernels need {}.{} \
             (Ampere) or newer",
            MIN_COMPUTE_CAPABILITY.0, MIN_COMPUTE_CAPABILITY.1
        )));
    }
    let target = nvrtc::choose_target(capability, &nvrtc::supported_archs()?).ok_or_else(|| {
        Error::NoNvrtc {
            reason: format!(
                "this NVRTC cannot compile for {name} (compute capability {major}.{minor})"
            ),
        }
    })?;
    let sm_count = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
        .max(1);

    // All work runs in order on one stream, so cudarc's per-buffer event tracking (meant for
    // buffers shared between streams) would only add two events per allocation.
    // SAFETY: nothing has been allocated on this context through cudarc yet, and sd-cuda never
    // uses a second stream.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.default_stream();

    libraries::load(CudaLibrary::Cublas).map_err(no_device)?;
    let blas = CudaBlas::new(stream.clone())
        .map_err(|e| no_device(format!("{name}: cannot create a cuBLAS handle: {e}")))?;
    Ok(Device {
        ctx,
        stream,
        blas,
        target,
        name,
        sm_count,
    })
}
