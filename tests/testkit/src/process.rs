//! Peak resident memory and CPU time of this process, from Linux's `/proc/self`, and a way to
//! restart the memory peak so a measurement can cover one phase (the forward pass, not loading).
//! CPU time is quoted next to wall time because other jobs share the 2-core machines: it moves
//! much less than wall time when another process takes a core.

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

/// User + system CPU seconds this process has used (all threads), if readable.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / CLOCK_TICKS_PER_SECOND)
}

/// Linux's USER_HZ on every mainstream architecture.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
