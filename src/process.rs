//! Process figures and limits (Linux): resident memory, open descriptors
//! and their limit, the kernel's accept-queue cap and overflow count.
//! Elsewhere figures are absent (None) and callers keep their last value. A
//! leaf: used by admission (the memory watermark), metrics and start-up.

/// Resident set size in bytes.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The system's page size: statm counts pages (64 KiB on some arm64 kernels).
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Number of open file descriptors.
pub fn open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(dir.count() as u64)
}

/// The open-file limit before and after `raise_fd_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the process started with (None: unlimited).
    pub was: Option<u64>,
    /// The soft limit now.
    pub now: Option<u64>,
}

/// The soft open-file limit (None: unlimited or unknown).
pub fn max_fds() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raise the soft open-file limit to the hard one: containers and shells
/// often start processes at 1024 soft, far below what a connection server
/// needs, while the hard limit allows more. Never lowers anything.
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let was = limit.current;
    let raise = match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) => hard > soft,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if raise {
        let mut raised = limit;
        raised.current = limit.maximum;
        setrlimit(Resource::Nofile, raised)?;
    }
    Ok(FdLimit {
        was,
        now: max_fds(),
    })
}

/// `net.core.somaxconn`: the kernel's cap on every listen backlog (per
/// network namespace).
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// TcpExt `ListenOverflows` of this network namespace: connections dropped
/// because an accept queue was full (every listener in the namespace).
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    tcp_ext(&text, "ListenOverflows")
}

/// A TcpExt field from /proc/net/netstat's text: a header line of names, then
/// a line of values.
fn tcp_ext(text: &str, field: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_ext_fields_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 17 19\nIpExt: InNoRoutes\nIpExt: 3\n";
        assert_eq!(tcp_ext(text, "ListenOverflows"), Some(17));
        assert_eq!(tcp_ext(text, "ListenDrops"), Some(19));
        assert_eq!(tcp_ext(text, "Nope"), None);
        assert_eq!(tcp_ext("garbage", "ListenOverflows"), None);
    }

    #[test]
    fn figures_read_on_linux() {
        assert!(page_size() >= 4096);
        assert!(resident_bytes().is_some());
        assert!(listen_overflows().is_some());
        let limit = raise_fd_limit().unwrap();
        assert!(limit.now >= limit.was || limit.now.is_none());
    }
}
