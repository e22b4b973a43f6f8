//! Process figures and limits (Linux): resident memory, the memory cgroup's
//! usage and limit, open descriptors and their limit, the kernel's
//! accept-queue cap and overflow count.
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

/// The memory cgroup this process is in (a container's, a systemd unit's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupMemory {
    /// Bytes charged to the cgroup: every process in it, page cache and
    /// kernel memory such as socket buffers (which RSS does not show).
    pub usage: u64,
    /// Its hard limit (None: unlimited).
    pub limit: Option<u64>,
}

/// This process's memory cgroup (v2, or v1's memory controller).
pub fn cgroup_memory() -> Option<CgroupMemory> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_memory_at(std::path::Path::new("/sys/fs/cgroup"), &membership)
}

/// `cgroup_memory` with the cgroup file system mounted at `root` and
/// `/proc/self/cgroup`'s text (tests point it at a fake tree).
pub fn cgroup_memory_at(root: &std::path::Path, membership: &str) -> Option<CgroupMemory> {
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    // v2: one line "0::/path".
    if let Some(path) = membership.lines().find_map(|l| l.strip_prefix("0::")) {
        let dir = root.join(path.trim_start_matches('/'));
        if let Some(usage) = read(dir.join("memory.current")) {
            let limit = read(dir.join("memory.max")).and_then(|t| t.trim().parse().ok());
            return Some(CgroupMemory {
                usage: usage.trim().parse().ok()?,
                limit,
            });
        }
    }
    // v1: "N:memory:/path" (or a controller list containing memory).
    let path = membership.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    let mut dir = root.join("memory").join(path.trim_start_matches('/'));
    if !dir.join("memory.usage_in_bytes").exists() {
        // Inside a container the cgroup's own directory is mounted as the root.
        dir = root.join("memory");
    }
    let usage: u64 = read(dir.join("memory.usage_in_bytes"))?
        .trim()
        .parse()
        .ok()?;
    // v1 reports "no limit" as a huge page-aligned number.
    let limit = read(dir.join("memory.limit_in_bytes"))
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|l| *l < (1 << 62));
    Some(CgroupMemory { usage, limit })
}

/// Physical memory (MemTotal), the watermark's base outside a limited cgroup.
pub fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The memory the watermark compares: RSS, or the cgroup's usage when the
/// cgroup has a limit and charges more (socket buffers and page cache count
/// against a container's limit, and the OOM killer goes by that figure).
pub fn memory_in_use() -> Option<u64> {
    let rss = resident_bytes();
    match cgroup_memory() {
        Some(CgroupMemory {
            usage,
            limit: Some(_),
        }) => Some(rss.map_or(usage, |r| r.max(usage))),
        _ => rss,
    }
}

/// What a fractional watermark is a fraction of: the cgroup's limit when it
/// has one, else physical memory.
pub fn memory_limit() -> Option<u64> {
    cgroup_memory().and_then(|c| c.limit).or_else(total_memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_and_v1_figures_are_read() {
        let root = std::env::temp_dir().join(format!("myriad-cg-{}", std::process::id()));
        let v2 = root.join("v2/kubepods/pod1");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.current"), "1048576\n").unwrap();
        std::fs::write(v2.join("memory.max"), "4194304\n").unwrap();
        let got = cgroup_memory_at(&root.join("v2"), "0::/kubepods/pod1\n").unwrap();
        assert_eq!(
            got,
            CgroupMemory {
                usage: 1 << 20,
                limit: Some(4 << 20)
            }
        );
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        let got = cgroup_memory_at(&root.join("v2"), "0::/kubepods/pod1\n").unwrap();
        assert_eq!(got.limit, None, "\"max\" is no limit");
        // v1, the container's own cgroup mounted as the hierarchy's root.
        let v1 = root.join("v1/memory");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.usage_in_bytes"), "2048\n").unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let got = cgroup_memory_at(
            &root.join("v1"),
            "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n",
        )
        .unwrap();
        assert_eq!(
            got,
            CgroupMemory {
                usage: 2048,
                limit: None
            }
        );
        std::fs::write(v1.join("memory.limit_in_bytes"), "8192\n").unwrap();
        let got = cgroup_memory_at(&root.join("v1"), "4:memory:/docker/abc\n").unwrap();
        assert_eq!(got.limit, Some(8192));
        assert_eq!(cgroup_memory_at(&root.join("none"), "garbage"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

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
        assert!(total_memory().is_some_and(|m| m > 0));
        assert!(memory_limit().is_some());
        assert!(memory_in_use().is_some());
        let limit = raise_fd_limit().unwrap();
        assert!(limit.now >= limit.was || limit.now.is_none());
    }
}
