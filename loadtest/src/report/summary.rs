//! The human summary printed on stdout at the end of a run.

use std::fmt::Write;

use super::{Percentiles, Report};

fn pct_line(name: &str, p: &Percentiles) -> String {
    format!(
        "  {name:<26} p50 {:>9.3}  p90 {:>9.3}  p99 {:>9.3}  p99.9 {:>9.3}  max {:>9.3} ms  (n={})\n",
        p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.count
    )
}

pub fn render(r: &Report) -> String {
    let f = r.figures();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "myriad-load {} against {} ({}), {} worker process(es)",
        r.scenario, r.target, r.protocol, r.workers
    );
    let _ = writeln!(out, "  phase                      {:.2} s", f.phase_secs);
    let _ = writeln!(
        out,
        "  connections                {} ok, {} failed, peak {} ({:.0}/s)",
        f.connects_ok, f.connect_errors, f.peak_connections, f.connect_per_sec
    );
    if f.joins_ok > 0 {
        let _ = writeln!(out, "  joins                      {}", f.joins_ok);
    }
    if f.cycles > 0 {
        let _ = writeln!(out, "  churn cycles               {}", f.cycles);
    }
    if f.sent > 0 || f.delivered > 0 {
        let _ = writeln!(
            out,
            "  messages                   sent {}, delivered {} of {} expected ({:.0}/s)",
            f.sent, f.delivered, f.expected, f.delivered_per_sec
        );
        let _ = writeln!(
            out,
            "  lost / duplicated / reordered  {} / {} / {}",
            f.lost, f.duplicated, f.reordered
        );
    }
    if f.expected_loss > 0 || f.slow_disconnected > 0 {
        let _ = writeln!(
            out,
            "  slow subscribers           {} disconnected by the server, {} messages missed on purpose",
            f.slow_disconnected, f.expected_loss
        );
    }
    if f.handshake.count > 0 {
        out.push_str(&pct_line("handshake", &f.handshake));
    }
    if f.join.count > 0 {
        out.push_str(&pct_line("join", &f.join));
    }
    if f.moved > 0 {
        let _ = writeln!(
            out,
            "  moved clients              {} lost their node, {} back, {} handshakes refused with 503, {} accept-queue overflows",
            f.moved, f.reconnect.count, f.refused_503, f.listen_overflows
        );
        out.push_str(&pct_line("back on another node", &f.reconnect));
    }
    if f.side_sent > 0 {
        let _ = writeln!(
            out,
            "  side rooms                 {} chat pushes, {} receipts ({:.0}/s)",
            f.side_sent, f.side_delivered, f.side_delivered_per_sec
        );
        out.push_str(&pct_line("side-room latency", &f.side_latency));
    }
    if f.latency.count > 0 {
        out.push_str(&pct_line("end-to-end latency", &f.latency));
    }
    if f.publish_to_last_delivery.count > 0 {
        out.push_str(&pct_line(
            "publish→last delivery",
            &f.publish_to_last_delivery,
        ));
    }
    if !r.stats.errors.is_empty() {
        let _ = writeln!(out, "  errors:");
        for (k, v) in &r.stats.errors {
            let _ = writeln!(out, "    {v:>8}  {k}");
        }
    }
    if !r.stats.close_codes.is_empty() {
        let codes: Vec<String> = r
            .stats
            .close_codes
            .iter()
            .map(|(c, n)| format!("{c}×{n}"))
            .collect();
        let _ = writeln!(out, "  close codes from server    {}", codes.join(", "));
    }
    if let Some(p) = &r.server {
        let _ = writeln!(
            out,
            "  server pid {}              RSS {} → {} KiB (loaded) → {} KiB (after), peak {} KiB",
            p.pid, p.before.rss_kib, p.loaded.rss_kib, p.after.rss_kib, p.peak_rss_kib
        );
        if let Some(k) = f.server_rss_per_connection_kib {
            let _ = writeln!(out, "  server RSS per connection  {k:.2} KiB");
        }
        if let Some(c) = f.server_cpu_us_per_message {
            let _ = writeln!(out, "  server CPU per message     {c:.2} µs");
        }
    }
    if let Some(m) = &r.metrics {
        let _ = writeln!(out, "  server metrics that changed ({}):", m.len());
        for (k, v) in m.iter().take(25) {
            let _ = writeln!(out, "    {k} {v}");
        }
    }
    if r.unexpected_damage() {
        let _ = writeln!(out, "FAIL: unexpected loss, duplicates or reordering");
    }
    if r.nothing_connected() {
        let _ = writeln!(out, "FAIL: no connection succeeded (see the errors above)");
    }
    for v in &r.violations {
        let _ = writeln!(
            out,
            "SLO VIOLATED: {} (measured {:.3})",
            v.clause, v.measured
        );
    }
    out
}
