//! Keeping freed activation buffers mapped.
//!
//! Every op allocates its output, and SD's activations are tens of MB (a UNet feed-forward's
//! is 84 MB). glibc's malloc serves such sizes with a fresh `mmap` and returns them with
//! `munmap` when freed, so every op pays the kernel to map and zero its output's pages again —
//! measured as 40 % of a large linear layer's time (`cargo run --release --example cpu_ops`:
//! FF-in linear 69 → 39 ms in bf16, 107 → 70 ms in f32). Raising malloc's mmap threshold
//! and trim threshold keeps large blocks in the heap, where freed ones are reused by the next
//! op; the peak resident size stays the peak of live data (freed blocks coalesce), which is
//! what `sd bench` reports.
//!
//! This is a process-wide setting, made once when the first [`CpuBackend`](super::CpuBackend)
//! is created, and only with glibc. Set `SD_KEEP_MALLOC=1` to leave the allocator alone.

/// Apply the settings once per process.
pub(crate) fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("SD_KEEP_MALLOC").is_some() {
                return;
            }
            // SAFETY: mallopt only changes malloc's tuning parameters; it is called before
            // the backend allocates and is safe to call at any time in glibc.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        });
    }
}

/// Hand the heap's free pages back to the OS (glibc's `malloc_trim`), after a large release
/// such as dropping a model's weights: with the thresholds above, freed blocks otherwise stay
/// resident, so a low-memory pipeline's next phase would not see the memory its last one gave
/// up. A no-op without glibc.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it is thread-safe in glibc.
    unsafe {
        libc::malloc_trim(0);
    }
}
