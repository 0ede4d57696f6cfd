//! Checks that stop a generation before it aborts the process or ends in a black image: the
//! batch cap, the memory estimate against what the machine has free, and the NaN guard on the
//! latents, the text conditioning and the decoded image.

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// The most images one generation holds at once. Every image of a batch is denoised together
/// (its latents, activations and decoded pixels live at the same time); more images are more
/// generations (several commands, or a loop), not a bigger batch.
pub const MAX_BATCH_SIZE: usize = 64;

/// A lower bound on the bytes the denoiser's activations take per latent pixel per batch row:
/// SD 1.5's UNet at full resolution holds a 320-channel feature map and its transformer's
/// GEGLU hidden layer (2 × 1280 floats) at once, about 3000 f32 values. The real peak is
/// higher; the estimate only refuses what clearly cannot fit.
const DENOISER_BYTES_PER_LATENT_PIXEL: u64 = 3000 * 4;

/// `batch_size` is in `1..=`[`MAX_BATCH_SIZE`] (the reason in the message).
pub fn check_batch_size(batch_size: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(Error::invalid_argument("batch_size", "must be at least 1"));
    }
    if batch_size > MAX_BATCH_SIZE {
        return Err(Error::invalid_argument(
            "batch_size",
            format!(
                "{batch_size} is more than {MAX_BATCH_SIZE}: a batch is held in memory at once; \
                 run several generations for more images"
            ),
        ));
    }
    Ok(())
}

/// The bytes a generation of `rows` denoiser rows (the batch, doubled by classifier-free
/// guidance) over `latent_pixels` latent pixels needs at least.
pub fn estimate_generation_bytes(rows: usize, latent_pixels: usize) -> u64 {
    (rows as u64)
        .saturating_mul(latent_pixels as u64)
        .saturating_mul(DENOISER_BYTES_PER_LATENT_PIXEL)
}

/// Refuse with [`Error::OutOfMemory`] when `needed` bytes exceed `available` (unknown: no
/// check). `what` names the generation (`512×512, batch 2`).
pub fn check_fits(
    what: impl FnOnce() -> String,
    needed: u64,
    available: Option<u64>,
) -> Result<()> {
    match available {
        Some(available) if needed > available => Err(Error::OutOfMemory {
            what: what(),
            needed,
            available,
        }),
        _ => Ok(()),
    }
}

/// The memory this process may still take on this machine: Linux's `MemAvailable`, lowered to
/// the cgroup v2 limit's headroom when the process runs under one (containers, CI). `None`
/// elsewhere (then nothing is refused).
pub fn available_host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo_kib(&meminfo, "MemAvailable:")?.saturating_mul(1024);
    let cgroup_headroom = (|| {
        let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
        let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max": no limit
        let current: u64 = read("memory.current")?.trim().parse().ok()?;
        Some(max.saturating_sub(current))
    })();
    Some(cgroup_headroom.map_or(available, |headroom| available.min(headroom)))
}

/// The value of `key` (in kB) in `/proc/meminfo` text.
fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// [`Error::NonFinite`] when any value of `tensor` is NaN or infinite: a generation stops at
/// the first step whose `stage` (latents, text conditioning, decoded image) went bad.
pub fn ensure_finite(
    tensor: &HostTensor,
    stage: &'static str,
    step: usize,
    total: usize,
) -> Result<()> {
    if tensor.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite { stage, step, total })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    #[test]
    fn batches_past_the_cap_are_refused_with_the_reason() {
        assert!(check_batch_size(1).is_ok());
        assert!(check_batch_size(MAX_BATCH_SIZE).is_ok());
        let text = check_batch_size(usize::MAX).unwrap_err().to_string();
        assert!(
            text.contains("batch_size") && text.contains("held in memory"),
            "{text}"
        );
        assert!(check_batch_size(0).is_err());
    }

    #[test]
    fn the_estimate_never_overflows_and_refuses_only_past_the_free_memory() {
        assert_eq!(estimate_generation_bytes(usize::MAX, usize::MAX), u64::MAX);
        let needed = estimate_generation_bytes(2, 64 * 64);
        assert!(check_fits(String::new, needed, Some(needed)).is_ok());
        assert!(check_fits(String::new, needed, None).is_ok());
        let text = check_fits(|| "512×512".into(), needed, Some(needed / 2))
            .unwrap_err()
            .to_string();
        assert!(text.contains("512×512") && text.contains("GiB"), "{text}");
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:  100 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(meminfo_kib(text, "MemAvailable:"), Some(2048));
        assert_eq!(meminfo_kib(text, "SwapFree:"), None);
    }

    #[test]
    fn a_nan_anywhere_stops_with_the_stage_and_step() {
        let mut latents = HostTensor::zeros(vec![1, 4, 2, 2]);
        assert!(ensure_finite(&latents, "latents", 1, 3).is_ok());
        latents[[0, 3, 1, 1]] = f32::NAN;
        match ensure_finite(&latents, "latents", 2, 3) {
            Err(Error::NonFinite { stage, step, total }) => {
                assert_eq!((stage, step, total), ("latents", 2, 3));
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
}
