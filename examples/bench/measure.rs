//! What a workload costs the process: CPU time, resident memory, and timestamps. Linux only
//! (reads /proc).

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

/// CPU time (user+sys) of the process, or of the calling thread, in microseconds.
pub(crate) fn cpu_micros(thread_only: bool) -> u64 {
    let path = if thread_only {
        "/proc/thread-self/stat"
    } else {
        "/proc/self/stat"
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    ticks * 10_000 // USER_HZ is 100 on Linux
}

/// A `kB` field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The resident set now.
pub(crate) fn rss_bytes() -> u64 {
    status_bytes("VmRSS")
}

/// The resident set's high-water mark since the start or the last [`reset_peak_rss`].
pub(crate) fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM")
}

/// Restarts the high-water mark from the current resident set (`clear_refs` 5, Linux 4.0+),
/// so that set-up work such as pre-filling a topic does not count against the workload.
pub(crate) fn reset_peak_rss() {
    if let Err(error) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("could not reset the peak RSS: {error}");
    }
}

/// Wall-clock nanoseconds, carried in latency bodies from publisher to handler.
pub(crate) fn now_nanos() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(0)
}

/// The `p` quantile (0..=1) of sorted nanosecond samples, in milliseconds.
pub(crate) fn quantile_ms(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or(0) as f64 / 1e6
}

/// Writes `sent_ns latency_ns` lines to `path`, in arrival order, to see when the slow ones
/// happened (periodic stalls, bursts) rather than only how many there were.
pub(crate) fn dump_samples(path: Option<&Path>, samples: &[(u64, u64)]) {
    let Some(path) = path else {
        return;
    };
    let text: String = samples
        .iter()
        .map(|(sent, latency)| format!("{sent} {latency}\n"))
        .collect();
    if let Err(error) = std::fs::write(path, text) {
        eprintln!("could not write {}: {error}", path.display());
    }
}
