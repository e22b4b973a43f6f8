//! SVG plots of a run (plotters): latency percentiles per second,
//! connections over time, delivered messages per second.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use super::Report;

struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

fn chart(path: &Path, title: &str, y_desc: &str, lines: &[Line]) -> anyhow::Result<()> {
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("seconds since start")
        .y_desc(y_desc)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for line in lines {
        let color = line.color;
        c.draw_series(LineSeries::new(
            line.points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label(line.label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if lines.len() > 1 {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The file names written into the report directory.
pub const LATENCY: &str = "latency.svg";
pub const CONNECTIONS: &str = "connections.svg";
pub const THROUGHPUT: &str = "throughput.svg";

pub fn write_all(r: &Report, dir: &Path) -> anyhow::Result<()> {
    let series = &r.stats.series;
    let pct = |q: f64| -> Vec<(f64, f64)> {
        series
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.latency.is_empty())
            .map(|(i, s)| (i as f64, s.latency.value_at_quantile(q) as f64 / 1000.0))
            .collect()
    };
    chart(
        &dir.join(LATENCY),
        "End-to-end latency per second",
        "ms",
        &[
            Line {
                label: "p50",
                color: BLUE,
                points: pct(0.5),
            },
            Line {
                label: "p99",
                color: RGBColor(230, 120, 0),
                points: pct(0.99),
            },
            Line {
                label: "max",
                color: RED,
                points: pct(1.0),
            },
        ],
    )
    .with_context(|| format!("plotting {LATENCY}"))?;
    chart(
        &dir.join(CONNECTIONS),
        "Open connections",
        "connections",
        &[Line {
            label: "connections",
            color: BLUE,
            points: series
                .iter()
                .enumerate()
                .map(|(i, s)| (i as f64, s.connections as f64))
                .collect(),
        }],
    )
    .with_context(|| format!("plotting {CONNECTIONS}"))?;
    chart(
        &dir.join(THROUGHPUT),
        "Messages per second",
        "messages/s",
        &[
            Line {
                label: "delivered",
                color: RGBColor(0, 150, 70),
                points: series
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i as f64, s.delivered as f64))
                    .collect(),
            },
            Line {
                label: "sent",
                color: RGBColor(120, 120, 120),
                points: series
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i as f64, s.sent as f64))
                    .collect(),
            },
        ],
    )
    .with_context(|| format!("plotting {THROUGHPUT}"))?;
    Ok(())
}
