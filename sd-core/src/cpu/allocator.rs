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

/// Values per parallel task in [`repeated`].
const FILL_CHUNK: usize = 1 << 16;

/// `len` floats repeating `pattern` (a bias row; zeros when it is empty), written in parallel
/// straight into the new buffer. `vec![0.0; len]` would have glibc's calloc clear a reused heap
/// block on one thread first (1.8 % of a UNet step's samples were that memset), and a bias
/// fill after it is a second pass; here each value is written once, and the first touch of
/// fresh pages is spread over the threads.
pub(crate) fn repeated(len: usize, pattern: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    let pattern = if pattern.is_empty() {
        &[0.0][..]
    } else {
        pattern
    };
    let mut out = Vec::with_capacity(len);
    let chunk = (FILL_CHUNK / pattern.len()).max(1) * pattern.len();
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .for_each(|chunk| {
            if let [value] = pattern {
                chunk.fill(std::mem::MaybeUninit::new(*value));
                return;
            }
            // Chunks start at multiples of the pattern's length, so each restarts it.
            for piece in chunk.chunks_mut(pattern.len()) {
                for (dst, &value) in piece.iter_mut().zip(pattern) {
                    dst.write(value);
                }
            }
        });
    // SAFETY: the chunks cover the first `len` values of the capacity (reserved above), and
    // every value of every chunk was written.
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fills_every_value_with_the_pattern() {
        for (len, pattern) in [
            (0, vec![1.0]),
            (5, vec![]),
            (7, vec![1.0, 2.0, 3.0]),
            (3 * FILL_CHUNK + 11, vec![]),
            (
                2 * FILL_CHUNK + 320 * 5,
                (0..320).map(|i| i as f32).collect(),
            ),
            (
                FILL_CHUNK * 3,
                (0..FILL_CHUNK + 3).map(|i| i as f32).collect(),
            ),
        ] {
            let got = repeated(len, &pattern);
            assert_eq!(got.len(), len);
            for (i, &v) in got.iter().enumerate() {
                let want = if pattern.is_empty() {
                    0.0
                } else {
                    pattern[i % pattern.len()]
                };
                assert_eq!(v, want, "len {len}, pattern of {}, [{i}]", pattern.len());
            }
        }
    }
}
