//! What a run measured: counters, latency histograms (hdrhistogram, µs) and a
//! per-second time series. Owns merging (workers → one report) and the wire
//! form (histograms serialized, base64) that worker processes send their
//! parent. Never prints: reports live in `report`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram records (1 hour in µs); larger values saturate.
const MAX_US: u64 = 3_600_000_000;

pub fn histogram() -> Histogram<u64> {
    // 3 significant digits over 1 µs .. 1 h: about 0.1% error, ~30 KiB.
    match Histogram::new_with_bounds(1, MAX_US, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds are valid: {e}"),
    }
}

/// Record `us` saturating at the histogram's bound.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// One second of the run (seconds since the run's shared start).
#[derive(Debug, Clone)]
pub struct Second {
    pub connections: u64,
    pub sent: u64,
    pub delivered: u64,
    pub latency: Histogram<u64>,
}

impl Default for Second {
    fn default() -> Second {
        Second {
            connections: 0,
            sent: 0,
            delivered: 0,
            latency: histogram(),
        }
    }
}

/// Everything one scenario run (or one worker of it) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    pub connects_ok: u64,
    pub connect_errors: u64,
    /// Errors by kind ("refused", "timeout", "http 503", "join error", ...).
    pub errors: BTreeMap<String, u64>,
    /// Close codes the server sent, by code.
    pub close_codes: BTreeMap<u16, u64>,
    pub joins_ok: u64,
    pub sent: u64,
    /// Unique messages received (duplicates excluded).
    pub delivered: u64,
    /// Deliveries the scenario expected (sent × receivers).
    pub expected: u64,
    pub lost: u64,
    /// Losses the scenario provoked on purpose (slow consumers).
    pub expected_loss: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Sessions the scenario made slow on purpose that the server disconnected.
    pub slow_disconnected: u64,
    pub cycles: u64,
    pub peak_connections: u64,
    pub handshake: Histogram<u64>,
    pub join: Histogram<u64>,
    /// Storm: how long each moved client took to be back (lost its node →
    /// rejoined on another), µs.
    pub reconnect: Histogram<u64>,
    /// Storm: clients whose node went away under them.
    pub moved: u64,
    /// Storm: handshakes refused with 503 while reconnecting (admission).
    pub refused_503: u64,
    /// Connections the kernel dropped on full accept queues during the run
    /// (TcpExt ListenOverflows of this machine's network namespace).
    pub listen_overflows: u64,
    /// Fan-out with side rooms: chat pushes sent into the small rooms, and
    /// first-time receipts of them (the fan-out figures exclude both).
    pub side_sent: u64,
    pub side_delivered: u64,
    /// Side-room push to receipt, µs.
    pub side_latency: Histogram<u64>,
    pub latency: Histogram<u64>,
    /// Per published message (fanout): publish to the last subscriber's receipt, µs.
    pub last_delivery: BTreeMap<u64, u64>,
    pub series: Vec<Second>,
    /// When the measured phase ran (µs since the Unix epoch), for rates.
    pub phase_start_us: u64,
    pub phase_end_us: u64,
    /// When the connect phase ran (µs since the Unix epoch; 0 when the
    /// scenario has none): the connect rate's window.
    pub connect_start_us: u64,
    pub connect_end_us: u64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            connects_ok: 0,
            connect_errors: 0,
            errors: BTreeMap::new(),
            close_codes: BTreeMap::new(),
            joins_ok: 0,
            sent: 0,
            delivered: 0,
            expected: 0,
            lost: 0,
            expected_loss: 0,
            duplicated: 0,
            reordered: 0,
            slow_disconnected: 0,
            cycles: 0,
            peak_connections: 0,
            handshake: histogram(),
            join: histogram(),
            reconnect: histogram(),
            moved: 0,
            refused_503: 0,
            listen_overflows: 0,
            side_sent: 0,
            side_delivered: 0,
            side_latency: histogram(),
            latency: histogram(),
            last_delivery: BTreeMap::new(),
            series: Vec::new(),
            phase_start_us: 0,
            phase_end_us: 0,
            connect_start_us: 0,
            connect_end_us: 0,
        }
    }
}

impl Stats {
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn second(&mut self, index: usize) -> &mut Second {
        if self.series.len() <= index {
            self.series.resize_with(index + 1, Second::default);
        }
        &mut self.series[index]
    }

    /// The measured phase's length; zero when it never ran.
    pub fn phase(&self) -> Duration {
        Duration::from_micros(self.phase_end_us.saturating_sub(self.phase_start_us))
    }

    /// The connect phase's length; zero when the scenario has none.
    pub fn connect_phase(&self) -> Duration {
        Duration::from_micros(self.connect_end_us.saturating_sub(self.connect_start_us))
    }

    /// Widen the connect window to `[start, end]` (µs since the Unix epoch).
    pub fn connect_window(&mut self, start: u64, end: u64) {
        self.connect_start_us = earliest(self.connect_start_us, start);
        self.connect_end_us = self.connect_end_us.max(end);
    }

    /// Fold another worker's stats into these.
    pub fn merge(&mut self, other: &Stats) {
        self.connects_ok += other.connects_ok;
        self.connect_errors += other.connect_errors;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.close_codes {
            *self.close_codes.entry(*k).or_default() += v;
        }
        self.joins_ok += other.joins_ok;
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.expected += other.expected;
        self.lost += other.lost;
        self.expected_loss += other.expected_loss;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.slow_disconnected += other.slow_disconnected;
        self.cycles += other.cycles;
        self.peak_connections += other.peak_connections;
        add(&mut self.handshake, &other.handshake);
        add(&mut self.join, &other.join);
        add(&mut self.reconnect, &other.reconnect);
        self.moved += other.moved;
        self.refused_503 += other.refused_503;
        self.listen_overflows += other.listen_overflows;
        self.side_sent += other.side_sent;
        self.side_delivered += other.side_delivered;
        add(&mut self.side_latency, &other.side_latency);
        add(&mut self.latency, &other.latency);
        for (msg, us) in &other.last_delivery {
            let slot = self.last_delivery.entry(*msg).or_default();
            *slot = (*slot).max(*us);
        }
        for (i, s) in other.series.iter().enumerate() {
            let mine = self.second(i);
            mine.connections += s.connections;
            mine.sent += s.sent;
            mine.delivered += s.delivered;
            add(&mut mine.latency, &s.latency);
        }
        self.phase_start_us = earliest(self.phase_start_us, other.phase_start_us);
        self.phase_end_us = self.phase_end_us.max(other.phase_end_us);
        self.connect_window(other.connect_start_us, other.connect_end_us);
    }
}

/// The earlier of two start times, 0 meaning "not set".
fn earliest(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Both come from `histogram()`, so bounds match; saturate defensively.
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to().min(MAX_US), v.count_at_value());
        }
    }
}

/// A histogram as base64 of its HdrHistogram V2 encoding (what `hdrhistogram`
/// and the Java/Go/Python HdrHistogram libraries all read).
pub fn histogram_to_base64(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    if V2Serializer::new().serialize(h, &mut buf).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn histogram_from_base64(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    let h: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice())?;
    let mut out = histogram();
    add(&mut out, &h);
    Ok(out)
}

/// The serialized form of `Stats` (worker → parent, and the `--json` file).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StatsWire {
    pub connects_ok: u64,
    pub connect_errors: u64,
    pub errors: BTreeMap<String, u64>,
    pub close_codes: BTreeMap<u16, u64>,
    pub joins_ok: u64,
    pub sent: u64,
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub expected_loss: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub slow_disconnected: u64,
    pub cycles: u64,
    pub peak_connections: u64,
    pub handshake_hist: String,
    pub join_hist: String,
    #[serde(default)]
    pub reconnect_hist: String,
    #[serde(default)]
    pub moved: u64,
    #[serde(default)]
    pub refused_503: u64,
    #[serde(default)]
    pub listen_overflows: u64,
    #[serde(default)]
    pub side_sent: u64,
    #[serde(default)]
    pub side_delivered: u64,
    #[serde(default)]
    pub side_latency_hist: String,
    pub latency_hist: String,
    pub last_delivery: BTreeMap<u64, u64>,
    pub series: Vec<SecondWire>,
    pub phase_start_us: u64,
    pub phase_end_us: u64,
    #[serde(default)]
    pub connect_start_us: u64,
    #[serde(default)]
    pub connect_end_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SecondWire {
    pub connections: u64,
    pub sent: u64,
    pub delivered: u64,
    pub latency_hist: String,
}

impl From<&Stats> for StatsWire {
    fn from(s: &Stats) -> StatsWire {
        StatsWire {
            connects_ok: s.connects_ok,
            connect_errors: s.connect_errors,
            errors: s.errors.clone(),
            close_codes: s.close_codes.clone(),
            joins_ok: s.joins_ok,
            sent: s.sent,
            delivered: s.delivered,
            expected: s.expected,
            lost: s.lost,
            expected_loss: s.expected_loss,
            duplicated: s.duplicated,
            reordered: s.reordered,
            slow_disconnected: s.slow_disconnected,
            cycles: s.cycles,
            peak_connections: s.peak_connections,
            handshake_hist: histogram_to_base64(&s.handshake),
            join_hist: histogram_to_base64(&s.join),
            reconnect_hist: histogram_to_base64(&s.reconnect),
            moved: s.moved,
            refused_503: s.refused_503,
            listen_overflows: s.listen_overflows,
            side_sent: s.side_sent,
            side_delivered: s.side_delivered,
            side_latency_hist: histogram_to_base64(&s.side_latency),
            latency_hist: histogram_to_base64(&s.latency),
            last_delivery: s.last_delivery.clone(),
            series: s
                .series
                .iter()
                .map(|x| SecondWire {
                    connections: x.connections,
                    sent: x.sent,
                    delivered: x.delivered,
                    latency_hist: histogram_to_base64(&x.latency),
                })
                .collect(),
            phase_start_us: s.phase_start_us,
            phase_end_us: s.phase_end_us,
            connect_start_us: s.connect_start_us,
            connect_end_us: s.connect_end_us,
        }
    }
}

impl TryFrom<&StatsWire> for Stats {
    type Error = anyhow::Error;

    fn try_from(w: &StatsWire) -> anyhow::Result<Stats> {
        let mut series = Vec::with_capacity(w.series.len());
        for x in &w.series {
            series.push(Second {
                connections: x.connections,
                sent: x.sent,
                delivered: x.delivered,
                latency: histogram_from_base64(&x.latency_hist)?,
            });
        }
        Ok(Stats {
            connects_ok: w.connects_ok,
            connect_errors: w.connect_errors,
            errors: w.errors.clone(),
            close_codes: w.close_codes.clone(),
            joins_ok: w.joins_ok,
            sent: w.sent,
            delivered: w.delivered,
            expected: w.expected,
            lost: w.lost,
            expected_loss: w.expected_loss,
            duplicated: w.duplicated,
            reordered: w.reordered,
            slow_disconnected: w.slow_disconnected,
            cycles: w.cycles,
            peak_connections: w.peak_connections,
            handshake: histogram_from_base64(&w.handshake_hist)?,
            join: histogram_from_base64(&w.join_hist)?,
            reconnect: if w.reconnect_hist.is_empty() {
                histogram()
            } else {
                histogram_from_base64(&w.reconnect_hist)?
            },
            moved: w.moved,
            refused_503: w.refused_503,
            listen_overflows: w.listen_overflows,
            side_sent: w.side_sent,
            side_delivered: w.side_delivered,
            side_latency: if w.side_latency_hist.is_empty() {
                histogram()
            } else {
                histogram_from_base64(&w.side_latency_hist)?
            },
            latency: histogram_from_base64(&w.latency_hist)?,
            last_delivery: w.last_delivery.clone(),
            series,
            phase_start_us: w.phase_start_us,
            phase_end_us: w.phase_end_us,
            connect_start_us: w.connect_start_us,
            connect_end_us: w.connect_end_us,
        })
    }
}

/// Shared, lock-protected stats that many connection tasks record into.
#[derive(Debug, Default)]
pub struct SharedStats(Mutex<Stats>);

impl SharedStats {
    pub fn with<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    pub fn into_inner(self) -> Stats {
        self.0
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counters_and_histograms() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for us in 1..=1000 {
            record(&mut a.latency, us);
        }
        for us in 1001..=2000 {
            record(&mut b.latency, us);
        }
        a.sent = 10;
        b.sent = 5;
        a.error("timeout");
        b.error("timeout");
        b.error("refused");
        b.second(2).delivered = 7;
        a.last_delivery.insert(1, 100);
        b.last_delivery.insert(1, 300);
        a.merge(&b);
        assert_eq!(a.sent, 15);
        assert_eq!(a.latency.len(), 2000);
        let median = a.latency.value_at_quantile(0.5);
        assert!((995..=1005).contains(&median), "median {median}");
        assert_eq!(a.errors["timeout"], 2);
        assert_eq!(a.errors["refused"], 1);
        assert_eq!(a.series.len(), 3);
        assert_eq!(a.series[2].delivered, 7);
        assert_eq!(
            a.last_delivery[&1], 300,
            "the last delivery is the max over workers"
        );
    }

    #[test]
    fn wire_round_trip_keeps_histograms() {
        let mut s = Stats::default();
        for us in [5, 50, 500, 5000, 50_000] {
            record(&mut s.latency, us);
            record(&mut s.second(1).latency, us);
        }
        s.close_codes.insert(1013, 3);
        let json = serde_json::to_string(&StatsWire::from(&s)).unwrap();
        let back = Stats::try_from(&serde_json::from_str::<StatsWire>(&json).unwrap()).unwrap();
        assert_eq!(back.latency.len(), 5);
        assert_eq!(back.latency.max(), s.latency.max());
        assert_eq!(back.series[1].latency.len(), 5);
        assert_eq!(back.close_codes[&1013], 3);
    }

    #[test]
    fn merging_serialized_worker_histograms_matches_one_histogram() {
        // Two "workers" each record half; after serialize + merge the
        // percentiles equal those of one histogram that saw everything.
        let mut all = histogram();
        let mut w1 = Stats::default();
        let mut w2 = Stats::default();
        for i in 0..10_000u64 {
            let us = 10 + (i * 7919) % 90_000;
            record(&mut all, us);
            if i % 2 == 0 {
                record(&mut w1.latency, us);
            } else {
                record(&mut w2.latency, us);
            }
        }
        let mut merged = Stats::default();
        for w in [&w1, &w2] {
            let wire: StatsWire =
                serde_json::from_str(&serde_json::to_string(&StatsWire::from(w)).unwrap()).unwrap();
            merged.merge(&Stats::try_from(&wire).unwrap());
        }
        for q in [0.5, 0.9, 0.99, 0.999] {
            assert_eq!(
                merged.latency.value_at_quantile(q),
                all.value_at_quantile(q)
            );
        }
    }
}
