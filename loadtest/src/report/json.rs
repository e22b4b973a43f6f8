//! The `--json` file: the figures, the configuration, the server probe, and
//! the raw histograms (HdrHistogram V2, base64) for anyone who wants to
//! re-analyse or merge runs.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::{Figures, Report};
use crate::probe::ServerProcess;
use crate::stats::StatsWire;

#[derive(Serialize)]
struct JsonReport<'a> {
    scenario: &'a str,
    command_line: &'a str,
    target: &'a str,
    protocol: &'a str,
    workers: u64,
    started_unix_s: u64,
    figures: Figures,
    server: Option<&'a ServerProcess>,
    server_metrics_changed: Option<&'a std::collections::BTreeMap<String, f64>>,
    slo_violations: Vec<String>,
    exit_code: i32,
    /// Everything, histograms included (µs values).
    raw: StatsWire,
}

pub fn render(r: &Report) -> anyhow::Result<String> {
    let doc = JsonReport {
        scenario: &r.scenario,
        command_line: &r.command_line,
        target: &r.target,
        protocol: &r.protocol,
        workers: r.workers,
        started_unix_s: r.started_unix_s,
        figures: r.figures(),
        server: r.server.as_ref(),
        server_metrics_changed: r.metrics.as_ref(),
        slo_violations: r.violations.iter().map(|v| v.clause.clone()).collect(),
        exit_code: r.exit_code(),
        raw: StatsWire::from(&r.stats),
    };
    Ok(serde_json::to_string_pretty(&doc)?)
}

pub fn write(r: &Report, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, render(r)?).with_context(|| format!("writing {}", path.display()))
}
