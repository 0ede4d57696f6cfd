//! Peak resident memory of this process, from Linux's `/proc/self/status`, and a way to restart
//! the peak so a measurement can cover one phase (the model's forward pass, not its loading).

/// `VmHWM` (the peak resident set since start or the last [`reset`]) in bytes, if readable.
pub fn peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Current `VmRSS` in bytes, if readable.
pub fn current_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Restart the peak at the current resident set (`echo 5 > /proc/self/clear_refs`).
pub fn reset() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("cannot reset the peak RSS: {e}");
    }
}

/// Bytes as GiB for printing.
pub fn gib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "?".to_string(),
        |b| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
    )
}
