//! What the server looks like from outside while it is loaded: its RSS and
//! CPU time from /proc/PID (Linux), and its Prometheus /metrics before and
//! after. Owns the sampling and parsing; reporting is `report`'s.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Kernel clock ticks per second for /proc/PID/stat times (USER_HZ, 100 on
/// every mainstream Linux architecture).
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub cpu_secs: f64,
}

/// RSS and CPU time of `pid`, or None when it is gone or not readable.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample {
        rss_kib,
        cpu_secs: cpu_from_stat(&stat)?,
    })
}

/// utime + stime (fields 14 and 15) in seconds; the command name (field 2)
/// may contain spaces, so count from its closing parenthesis.
fn cpu_from_stat(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// The server's process over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerProcess {
    pub pid: u32,
    pub before: ProcSample,
    /// When every connection was up (the workers' "ready").
    pub loaded: ProcSample,
    pub after: ProcSample,
    pub peak_rss_kib: u64,
}

impl ServerProcess {
    /// Server RSS per connection: (loaded − before) / connections.
    pub fn rss_per_connection_kib(&self, connections: u64) -> Option<f64> {
        (connections > 0).then(|| {
            self.loaded.rss_kib.saturating_sub(self.before.rss_kib) as f64 / connections as f64
        })
    }

    /// CPU µs the server spent per delivered message from the moment every
    /// connection was up to the end (the connect phase excluded: a Phoenix
    /// server's joins and a raw server's bare upgrades would otherwise be
    /// charged to the messages). The whole run when `loaded` was not sampled.
    pub fn cpu_us_per_message(&self, delivered: u64) -> Option<f64> {
        let from = if self.loaded.cpu_secs > 0.0 {
            self.loaded.cpu_secs
        } else {
            self.before.cpu_secs
        };
        (delivered > 0).then(|| (self.after.cpu_secs - from) * 1e6 / delivered as f64)
    }
}

/// Parse Prometheus text exposition into `name{labels}` → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.trim().to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

pub async fn scrape(url: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let text = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(parse_metrics(&text))
}

/// Series that changed between two scrapes (counters' deltas, gauges' new values).
pub fn changes(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let old = before.get(k).copied().unwrap_or(0.0);
            let is_counter = k.split('{').next().is_some_and(|n| n.ends_with("_total"));
            let shown = if is_counter { v - old } else { *v };
            ((v - old).abs() > f64::EPSILON && !k.contains("_bucket")).then(|| (k.clone(), shown))
        })
        .collect()
}

/// TcpExt ListenOverflows of this network namespace (connections dropped on
/// full accept queues, every listener): read before and after a storm.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fields_survive_spaces_in_the_name() {
        let stat = "1234 (my server) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 0 0";
        assert_eq!(cpu_from_stat(stat), Some(3.0));
    }

    #[test]
    fn cpu_per_message_leaves_the_connect_phase_out() {
        let at = |cpu_secs| ProcSample {
            cpu_secs,
            ..ProcSample::default()
        };
        let mut p = ServerProcess {
            before: at(1.0),
            loaded: at(3.0),
            after: at(5.0),
            ..ServerProcess::default()
        };
        assert_eq!(p.cpu_us_per_message(1_000_000), Some(2.0));
        p.loaded = ProcSample::default();
        assert_eq!(p.cpu_us_per_message(1_000_000), Some(4.0));
        assert_eq!(p.cpu_us_per_message(0), None);
    }

    #[test]
    fn own_process_is_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }

    #[test]
    fn parses_exposition_and_diffs() {
        let a = parse_metrics("# HELP x y\nmyriad_sessions_active 3\nmyriad_x_total{k=\"v\"} 10\n");
        let b = parse_metrics("myriad_sessions_active 5\nmyriad_x_total{k=\"v\"} 15\nmyriad_y 1\n");
        assert_eq!(a["myriad_x_total{k=\"v\"}"], 10.0);
        let c = changes(&a, &b);
        assert_eq!(c["myriad_x_total{k=\"v\"}"], 5.0);
        assert_eq!(c["myriad_sessions_active"], 5.0);
        assert_eq!(c["myriad_y"], 1.0);
    }
}
