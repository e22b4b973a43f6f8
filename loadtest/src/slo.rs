//! `--slo "p99<50ms,loss=0"`: service-level objectives a run must meet. Owns
//! parsing and evaluation against the merged stats; the exit code is main's.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use crate::stats::Stats;

#[derive(Debug, Error, PartialEq)]
pub enum SloError {
    #[error("slo clause {0:?}: expected METRIC OP VALUE, e.g. p99<50ms (ops: < <= > >= =)")]
    Shape(String),
    #[error("slo clause {0:?}: unknown metric {1:?} (p50 p90 p99 p999 max handshake_p99 join_p99 fanout_p99 loss duplicates reorders errors delivered_per_sec connect_per_sec)")]
    Metric(String, String),
    #[error("slo clause {0:?}: bad value {1:?}")]
    Value(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    text: String,
    metric: String,
    op: Op,
    /// Latencies in µs, counts and rates as they are.
    value: f64,
}

/// A parsed `--slo` list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slo(Vec<Clause>);

const LATENCIES: &[&str] = &[
    "p50",
    "p90",
    "p99",
    "p999",
    "max",
    "handshake_p99",
    "join_p99",
    "fanout_p99",
];
const COUNTS: &[&str] = &[
    "loss",
    "duplicates",
    "reorders",
    "errors",
    "delivered_per_sec",
    "connect_per_sec",
];

impl FromStr for Slo {
    type Err = SloError;

    fn from_str(s: &str) -> Result<Slo, SloError> {
        let mut clauses = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let pos = raw
                .find(['<', '>', '='])
                .ok_or_else(|| SloError::Shape(raw.into()))?;
            let metric = raw[..pos].trim().to_string();
            let rest = &raw[pos..];
            let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
                (Op::Le, v)
            } else if let Some(v) = rest.strip_prefix(">=") {
                (Op::Ge, v)
            } else if let Some(v) = rest.strip_prefix('<') {
                (Op::Lt, v)
            } else if let Some(v) = rest.strip_prefix('>') {
                (Op::Gt, v)
            } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
                (Op::Eq, v)
            } else {
                return Err(SloError::Shape(raw.into()));
            };
            let value = value.trim();
            let value = if LATENCIES.contains(&metric.as_str()) {
                let d = humantime::parse_duration(value)
                    .map_err(|_| SloError::Value(raw.into(), value.into()))?;
                d.as_secs_f64() * 1e6
            } else if COUNTS.contains(&metric.as_str()) {
                value
                    .parse::<f64>()
                    .map_err(|_| SloError::Value(raw.into(), value.into()))?
            } else {
                return Err(SloError::Metric(raw.into(), metric));
            };
            clauses.push(Clause {
                text: raw.to_string(),
                metric,
                op,
                value,
            });
        }
        Ok(Slo(clauses))
    }
}

fn rate(count: u64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        count as f64 / over.as_secs_f64()
    }
}

/// The figure a clause is judged on.
pub fn measured(metric: &str, stats: &Stats) -> f64 {
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    match metric {
        "p50" => q(&stats.latency, 0.5),
        "p90" => q(&stats.latency, 0.9),
        "p99" => q(&stats.latency, 0.99),
        "p999" => q(&stats.latency, 0.999),
        "max" => stats.latency.max() as f64,
        "handshake_p99" => q(&stats.handshake, 0.99),
        "join_p99" => q(&stats.join, 0.99),
        "fanout_p99" => {
            let mut h = crate::stats::histogram();
            for us in stats.last_delivery.values() {
                crate::stats::record(&mut h, *us);
            }
            q(&h, 0.99)
        }
        "loss" => stats.lost as f64,
        "duplicates" => stats.duplicated as f64,
        "reorders" => stats.reordered as f64,
        "errors" => stats.error_count() as f64,
        "delivered_per_sec" => rate(stats.delivered, stats.phase()),
        "connect_per_sec" => rate(stats.connects_ok, stats.phase()),
        _ => f64::NAN,
    }
}

/// One violated clause, for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub clause: String,
    pub measured: f64,
}

impl Slo {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn check(&self, stats: &Stats) -> Vec<Violation> {
        self.0
            .iter()
            .filter_map(|c| {
                let m = measured(&c.metric, stats);
                let ok = match c.op {
                    Op::Lt => m < c.value,
                    Op::Le => m <= c.value,
                    Op::Gt => m > c.value,
                    Op::Ge => m >= c.value,
                    Op::Eq => (m - c.value).abs() < f64::EPSILON,
                };
                (!ok).then(|| Violation {
                    clause: c.text.clone(),
                    measured: m,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::record;

    #[test]
    fn parses_and_rejects() {
        assert!("p99<50ms,loss=0".parse::<Slo>().is_ok());
        assert!("p999 <= 1s, errors < 5, delivered_per_sec>=1000"
            .parse::<Slo>()
            .is_ok());
        assert!(matches!("p99 50ms".parse::<Slo>(), Err(SloError::Shape(_))));
        assert!(matches!(
            "latency<5ms".parse::<Slo>(),
            Err(SloError::Metric(..))
        ));
        assert!(matches!(
            "p99<fast".parse::<Slo>(),
            Err(SloError::Value(..))
        ));
    }

    #[test]
    fn judges_latency_and_loss() {
        let mut s = Stats::default();
        for us in 1..=100 {
            record(&mut s.latency, us * 1000); // 1..100 ms
        }
        let slo: Slo = "p99<50ms,loss=0".parse().unwrap();
        let v = slo.check(&s);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].clause, "p99<50ms");
        assert!("p99<200ms,loss=0"
            .parse::<Slo>()
            .unwrap()
            .check(&s)
            .is_empty());
        s.lost = 1;
        assert_eq!("loss=0".parse::<Slo>().unwrap().check(&s).len(), 1);
    }
}
