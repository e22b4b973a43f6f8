//! Everything a finished run reports, derived once from the merged stats:
//! `figures` (the numbers), then written as a human summary (stdout), JSON
//! (`--json`) and a Markdown report with SVG plots (`--report`). Owns no
//! measuring.

pub mod json;
pub mod markdown;
pub mod plots;
pub mod summary;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::probe::ServerProcess;
use crate::slo::Violation;
use crate::stats::{histogram, record, Stats};

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// The headline numbers of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub connects_ok: u64,
    pub connect_errors: u64,
    pub peak_connections: u64,
    pub connect_per_sec: f64,
    pub joins_ok: u64,
    pub cycles: u64,
    pub sent: u64,
    pub delivered: u64,
    pub expected: u64,
    pub delivered_per_sec: f64,
    pub lost: u64,
    pub expected_loss: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub slow_disconnected: u64,
    pub errors: u64,
    pub phase_secs: f64,
    pub handshake: Percentiles,
    pub join: Percentiles,
    /// Storm: lost its node → rejoined elsewhere, per moved client.
    pub reconnect: Percentiles,
    pub moved: u64,
    pub refused_503: u64,
    pub listen_overflows: u64,
    /// Fan-out with side rooms: the small rooms' chat traffic.
    pub side_sent: u64,
    pub side_delivered: u64,
    pub side_delivered_per_sec: f64,
    pub side_latency: Percentiles,
    pub latency: Percentiles,
    /// Fan-out: per message, publish to last subscriber's delivery.
    pub publish_to_last_delivery: Percentiles,
    pub server_rss_per_connection_kib: Option<f64>,
    pub server_cpu_us_per_message: Option<f64>,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub command_line: String,
    pub target: String,
    pub protocol: String,
    pub workers: u64,
    pub started_unix_s: u64,
    pub stats: Stats,
    pub server: Option<ServerProcess>,
    pub metrics: Option<BTreeMap<String, f64>>,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn last_delivery_histogram(&self) -> Histogram<u64> {
        let mut h = histogram();
        for us in self.stats.last_delivery.values() {
            record(&mut h, *us);
        }
        h
    }

    pub fn figures(&self) -> Figures {
        let s = &self.stats;
        let secs = s.phase().as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let connections = if s.peak_connections > 0 {
            s.peak_connections
        } else {
            s.connects_ok
        };
        Figures {
            connects_ok: s.connects_ok,
            connect_errors: s.connect_errors,
            peak_connections: s.peak_connections,
            // Over the connect phase where the scenario had one (fanout's
            // phase is its deliveries).
            connect_per_sec: match s.connect_phase().as_secs_f64() {
                w if w > 0.0 => s.connects_ok as f64 / w,
                _ => per_sec(s.connects_ok),
            },
            joins_ok: s.joins_ok,
            cycles: s.cycles,
            sent: s.sent,
            delivered: s.delivered,
            expected: s.expected,
            delivered_per_sec: per_sec(s.delivered),
            lost: s.lost,
            expected_loss: s.expected_loss,
            duplicated: s.duplicated,
            reordered: s.reordered,
            slow_disconnected: s.slow_disconnected,
            errors: s.error_count(),
            phase_secs: secs,
            handshake: Percentiles::of(&s.handshake),
            join: Percentiles::of(&s.join),
            reconnect: Percentiles::of(&s.reconnect),
            moved: s.moved,
            refused_503: s.refused_503,
            listen_overflows: s.listen_overflows,
            side_sent: s.side_sent,
            side_delivered: s.side_delivered,
            side_delivered_per_sec: per_sec(s.side_delivered),
            side_latency: Percentiles::of(&s.side_latency),
            latency: Percentiles::of(&s.latency),
            publish_to_last_delivery: Percentiles::of(&self.last_delivery_histogram()),
            server_rss_per_connection_kib: self
                .server
                .as_ref()
                .and_then(|p| p.rss_per_connection_kib(connections)),
            server_cpu_us_per_message: self
                .server
                .as_ref()
                .and_then(|p| p.cpu_us_per_message(s.delivered)),
        }
    }

    /// Loss, duplicates or reordering the scenario did not provoke on purpose.
    pub fn unexpected_damage(&self) -> bool {
        self.stats.lost > 0 || self.stats.duplicated > 0 || self.stats.reordered > 0
    }

    /// Every connection attempt failed: the run measured nothing (a wrong URL,
    /// an untrusted certificate, a server that is down).
    pub fn nothing_connected(&self) -> bool {
        self.stats.connects_ok == 0 && self.stats.connect_errors > 0
    }

    /// Exit status: 0 fine, 1 unexpected loss, nothing connected, or an SLO
    /// violated.
    pub fn exit_code(&self) -> i32 {
        if self.unexpected_damage() || self.nothing_connected() || !self.violations.is_empty() {
            1
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        let mut stats = Stats {
            connects_ok: 10,
            sent: 5,
            delivered: 50,
            expected: 50,
            phase_start_us: 1_000_000,
            phase_end_us: 3_000_000,
            ..Stats::default()
        };
        for us in [1_000, 2_000, 3_000] {
            record(&mut stats.latency, us);
            record(&mut stats.second(1).latency, us);
        }
        stats.second(1).delivered = 50;
        stats.error("timeout");
        Report {
            scenario: "chat".into(),
            command_line: "myriad-load chat".into(),
            target: "ws://127.0.0.1:4000/socket/websocket".into(),
            protocol: "phoenix".into(),
            workers: 1,
            started_unix_s: 0,
            stats,
            server: None,
            metrics: None,
            violations: Vec::new(),
        }
    }

    #[test]
    fn the_connect_rate_is_over_the_connect_phase_when_there_was_one() {
        let mut r = sample_report();
        // 10 connections over the 2 s phase ...
        assert_eq!(r.figures().connect_per_sec, 5.0);
        // ... but over their own 0.5 s window when the scenario recorded one
        // (two workers' windows merge into their union).
        let mut other = Stats::default();
        other.connect_window(1_200_000, 1_500_000);
        r.stats.connect_window(1_000_000, 1_100_000);
        r.stats.merge(&other);
        assert_eq!(
            r.stats.connect_phase(),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(r.figures().connect_per_sec, 20.0);
    }

    #[test]
    fn figures_derive_rates_and_percentiles() {
        let f = sample_report().figures();
        assert_eq!(f.phase_secs, 2.0);
        assert_eq!(f.delivered_per_sec, 25.0);
        assert_eq!(f.latency.count, 3);
        assert!((f.latency.p50_ms - 2.0).abs() < 0.01);
        assert_eq!(f.errors, 1);
    }

    #[test]
    fn writers_carry_the_figures() {
        let mut r = sample_report();
        let text = summary::render(&r);
        assert!(
            text.contains("delivered 50 of 50 expected (25/s)"),
            "{text}"
        );
        assert!(text.contains("timeout"));
        let md = markdown::render(&r);
        assert!(md.contains("| delivered / expected | 50 / 50 |"), "{md}");
        assert!(md.contains("![latency](latency.svg)"));
        assert!(md.contains("**pass**"));
        let doc: serde_json::Value = serde_json::from_str(&json::render(&r).unwrap()).unwrap();
        assert_eq!(doc["figures"]["delivered"], 50);
        assert_eq!(doc["exit_code"], 0);
        assert!(doc["raw"]["latency_hist"].as_str().unwrap().len() > 10);
        r.stats.lost = 1;
        assert_eq!(r.exit_code(), 1);
        assert!(summary::render(&r).contains("FAIL: unexpected loss"));
        let mut down = sample_report();
        down.stats.connects_ok = 0;
        down.stats.connect_errors = 3;
        assert_eq!(down.exit_code(), 1);
        assert!(summary::render(&down).contains("FAIL: no connection succeeded"));
        let dir = std::env::temp_dir().join(format!("myriad-load-report-{}", std::process::id()));
        markdown::write(&r, &dir).unwrap();
        assert!(std::fs::read_to_string(dir.join(plots::THROUGHPUT))
            .unwrap()
            .contains("<svg"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
