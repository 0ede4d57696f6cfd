//! The size of rayon's global thread pool, which every CPU op shares.
//!
//! `RAYON_NUM_THREADS` larger than the machine's cores only adds contention: with 1000 threads
//! on 2 cores a 0.35 s generation takes minutes. The pool is capped at the cores.

use std::sync::OnceLock;

/// Build the global pool at `min(RAYON_NUM_THREADS, cores)` threads when the variable asks for
/// more than the cores (otherwise rayon's own reading of it stands). Returns, every time it is
/// called, the notice saying the setting was lowered (`None` when it was not). Call before any
/// CPU op runs; [`CpuBackend::new`](super::CpuBackend::new) does.
pub fn cap_global_pool() -> Option<&'static str> {
    static NOTICE: OnceLock<Option<String>> = OnceLock::new();
    NOTICE
        .get_or_init(|| {
            let asked: usize = std::env::var("RAYON_NUM_THREADS")
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let cores = std::thread::available_parallelism().ok()?.get();
            if asked <= cores {
                return None;
            }
            // Fails only when the pool already exists (then it is too late to change it).
            let built = rayon::ThreadPoolBuilder::new()
                .num_threads(cores)
                .build_global()
                .is_ok();
            built.then(|| {
                format!(
                    "RAYON_NUM_THREADS={asked} is more than this machine's {cores} cores: using \
                     {cores} threads"
                )
            })
        })
        .as_deref()
}
