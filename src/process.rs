//! Process figures read from /proc (Linux): resident memory and open
//! descriptors. Elsewhere they are absent (None) and callers keep their last
//! value. A leaf: used by admission (the memory watermark) and metrics.

/// Resident set size in bytes.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // 4 KiB on every Linux target we build for; /proc/self/smaps would tell
    // otherwise but costs far more per scrape.
    4096
}

/// Number of open file descriptors.
pub fn open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(dir.count() as u64)
}
