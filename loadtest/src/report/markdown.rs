//! `--report DIR`: README.md with the run's tables, next to the SVG plots.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use super::{plots, Percentiles, Report};

fn row(name: &str, p: &Percentiles) -> String {
    format!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
        p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
    )
}

pub fn render(r: &Report) -> String {
    let f = r.figures();
    let mut md = String::new();
    let _ = writeln!(md, "# myriad-load {}: {}\n", r.scenario, r.target);
    let _ = writeln!(md, "- Command: `{}`", r.command_line);
    let _ = writeln!(
        md,
        "- Protocol: {}; worker processes: {}",
        r.protocol, r.workers
    );
    let _ = writeln!(
        md,
        "- Started: {} (Unix seconds); measured phase {:.2} s",
        r.started_unix_s, f.phase_secs
    );
    let verdict = if r.exit_code() == 0 { "pass" } else { "FAIL" };
    let _ = writeln!(md, "- Verdict: **{verdict}**\n");
    md.push_str("| figure | value |\n|---|---|\n");
    let mut fig = |k: &str, v: String| {
        let _ = writeln!(md, "| {k} | {v} |");
    };
    fig(
        "connections ok / failed / peak",
        format!(
            "{} / {} / {}",
            f.connects_ok, f.connect_errors, f.peak_connections
        ),
    );
    fig("connect rate", format!("{:.0}/s", f.connect_per_sec));
    fig("messages sent", f.sent.to_string());
    fig(
        "delivered / expected",
        format!("{} / {}", f.delivered, f.expected),
    );
    fig(
        "delivered per second",
        format!("{:.0}", f.delivered_per_sec),
    );
    fig(
        "lost / duplicated / reordered",
        format!("{} / {} / {}", f.lost, f.duplicated, f.reordered),
    );
    fig(
        "slow subscribers disconnected / missed on purpose",
        format!("{} / {}", f.slow_disconnected, f.expected_loss),
    );
    if f.side_sent > 0 {
        fig(
            "side-room chat pushes / receipts",
            format!(
                "{} / {} ({:.0}/s)",
                f.side_sent, f.side_delivered, f.side_delivered_per_sec
            ),
        );
    }
    fig("errors", f.errors.to_string());
    if let Some(k) = f.server_rss_per_connection_kib {
        fig("server RSS per connection", format!("{k:.2} KiB"));
    }
    if let Some(c) = f.server_cpu_us_per_message {
        fig("server CPU per delivered message", format!("{c:.2} µs"));
    }
    md.push_str(
        "\n| latency (ms) | n | p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|---|---|\n",
    );
    md.push_str(&row("handshake", &f.handshake));
    md.push_str(&row("join", &f.join));
    if f.moved > 0 {
        md.push_str(&row("moved → back on another node", &f.reconnect));
    }
    md.push_str(&row("end-to-end", &f.latency));
    if f.side_sent > 0 {
        md.push_str(&row("side-room push → receipt", &f.side_latency));
    }
    md.push_str(&row("publish → last delivery", &f.publish_to_last_delivery));
    if !r.stats.errors.is_empty() {
        md.push_str("\n| error | count |\n|---|---|\n");
        for (k, v) in &r.stats.errors {
            let _ = writeln!(md, "| {k} | {v} |");
        }
    }
    if !r.violations.is_empty() {
        md.push_str("\n## SLO violations\n\n");
        for v in &r.violations {
            let _ = writeln!(md, "- `{}` (measured {:.3})", v.clause, v.measured);
        }
    }
    let _ = write!(
        md,
        "\n## Plots\n\n![latency]({})\n\n![connections]({})\n\n![throughput]({})\n",
        plots::LATENCY,
        plots::CONNECTIONS,
        plots::THROUGHPUT
    );
    md
}

pub fn write(r: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("README.md"), render(r))
        .with_context(|| format!("writing {}/README.md", dir.display()))?;
    plots::write_all(r, dir)
}
