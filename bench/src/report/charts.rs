//! SVG bar charts (plotters): one per scenario and headline metric, a bar per subject at its
//! median with a whisker from min to p95.

use super::{Measurement, Report};
use crate::error::BenchError;
use plotters::prelude::*;
use std::path::Path;

/// Draws every chart of `report` into `dir`; returns the file names.
pub fn draw_all(report: &Report, dir: &Path) -> Result<Vec<String>, BenchError> {
    let mut keys: Vec<(crate::config::Scenario, String)> = Vec::new();
    for m in &report.measurements {
        if m.metric.starts_with("phase_") || m.metric == "guest_ram_size_mib" {
            continue;
        }
        let key = (m.scenario, m.metric.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut files = Vec::new();
    for (scenario, metric) in keys {
        let series: Vec<&Measurement> = report
            .measurements
            .iter()
            .filter(|m| m.scenario == scenario && m.metric == metric)
            .collect();
        let name = format!("{scenario}-{}.svg", metric.replace('_', "-"));
        draw(&series, &dir.join(&name), &report.environment.place_description)?;
        files.push(name);
    }
    Ok(files)
}

fn draw(series: &[&Measurement], path: &Path, place: &str) -> Result<(), BenchError> {
    let err = |e: String| BenchError::Chart {
        path: path.to_path_buf(),
        detail: e,
    };
    let Some(first) = series.first() else {
        return Ok(());
    };
    let top = series
        .iter()
        .map(|m| m.stats.p95.max(m.stats.median))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let width = (160 + 110 * series.len() as u32).max(480);
    let root = SVGBackend::new(path, (width, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let better = match first.better {
        super::Better::Lower => "lower is better",
        super::Better::Higher => "higher is better",
    };
    let caption = format!("{}: {} ({})", first.scenario, first.metric, better);
    let n = series.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
        .map_err(|e| err(e.to_string()))?;
    let labels: Vec<String> = series.iter().map(|m| m.subject.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(format!("{} — {place}", first.unit))
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(series.iter().enumerate().map(|(i, m)| {
            let color = Palette99::pick(i).mix(0.8);
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), m.stats.median),
                ],
                color.filled(),
            );
            bar.set_margin(0, 0, 18, 18);
            bar
        }))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(series.iter().enumerate().map(|(i, m)| {
            ErrorBar::new_vertical(
                SegmentValue::CenterOf(i),
                m.stats.min,
                m.stats.median,
                m.stats.p95,
                BLACK.filled(),
                10,
            )
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
