//! SVG charts (plotters): one bar chart per scenario and headline metric, a bar per subject at
//! its median with a whisker from min to p95 and a dot per measured run; and the boot phase
//! chart, a stacked bar per subject showing where its start goes (each phase's median).

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
    if let Some(name) = draw_phases(report, dir)? {
        files.push(name);
    }
    Ok(files)
}

/// One subject's start, phase by phase: (phase, median ms).
type Phases = (String, Vec<(String, f64)>);

/// The boot scenario's subjects with their phases (`phase_*_ms`, in the order the launcher
/// reports them); a subject without phases (crun, runc, runsc, QEMU) is one `total` segment of
/// its `ready_wall_ms` (else `true_wall_ms`).
fn boot_phases(report: &Report) -> Vec<Phases> {
    let boot = crate::config::Scenario::Boot;
    let mut subjects: Vec<Phases> = Vec::new();
    for m in report.measurements.iter().filter(|m| m.scenario == boot) {
        let i = match subjects.iter().position(|s| s.0 == m.subject) {
            Some(i) => i,
            None => {
                subjects.push((m.subject.clone(), Vec::new()));
                subjects.len() - 1
            }
        };
        if let Some(phase) = m
            .metric
            .strip_prefix("phase_")
            .and_then(|p| p.strip_suffix("_ms"))
        {
            subjects[i].1.push((phase.replace('_', "-"), m.stats.median));
        }
    }
    for (subject, phases) in &mut subjects {
        if phases.is_empty() {
            let total = ["ready_wall_ms", "true_wall_ms"].iter().find_map(|metric| {
                report
                    .measurements
                    .iter()
                    .find(|m| m.scenario == boot && &m.subject == subject && m.metric == *metric)
            });
            if let Some(m) = total {
                phases.push(("total".into(), m.stats.median));
            }
        }
    }
    subjects.retain(|s| !s.1.is_empty());
    subjects
}

/// `boot-phases.svg`: a stacked bar per subject, one colour per phase name.
fn draw_phases(report: &Report, dir: &Path) -> Result<Option<String>, BenchError> {
    let subjects = boot_phases(report);
    if !subjects.iter().any(|s| s.1.iter().any(|p| p.0 != "total")) {
        return Ok(None);
    }
    let name = "boot-phases.svg".to_string();
    let path = dir.join(&name);
    let err = |e: String| BenchError::Chart {
        path: path.clone(),
        detail: e,
    };
    let mut names: Vec<String> = Vec::new();
    for (_, phases) in &subjects {
        for (p, _) in phases {
            if !names.contains(p) {
                names.push(p.clone());
            }
        }
    }
    let top = subjects
        .iter()
        .map(|s| s.1.iter().map(|p| p.1).sum::<f64>())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let n = subjects.len();
    let width = (220 + 110 * n as u32).max(560);
    let root = SVGBackend::new(&path, (width, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "boot: where each start goes (phase medians, stacked)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
        .map_err(|e| err(e.to_string()))?;
    let labels: Vec<String> = subjects.iter().map(|s| s.0.clone()).collect();
    draw_axes(
        &mut chart,
        &labels,
        format!("ms — {}", report.environment.place_description),
    )
    .map_err(err)?;
    for (k, phase) in names.iter().enumerate() {
        let color = Palette99::pick(k).mix(0.85);
        let bars: Vec<Rectangle<(SegmentValue<usize>, f64)>> = subjects
            .iter()
            .enumerate()
            .filter_map(|(i, (_, phases))| {
                let at = phases.iter().position(|p| &p.0 == phase)?;
                let below: f64 = phases[..at].iter().map(|p| p.1).sum();
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), below),
                        (SegmentValue::Exact(i + 1), below + phases[at].1),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 18, 18);
                Some(bar)
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| err(e.to_string()))?
            .label(phase.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(Some(name))
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
        .map(|m| {
            m.samples
                .iter()
                .fold(m.stats.p95.max(m.stats.median), |a, b| a.max(*b))
        })
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
    draw_axes(&mut chart, &labels, format!("{} — {place}", first.unit)).map_err(err)?;
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
    chart
        .draw_series(series.iter().enumerate().flat_map(|(i, m)| {
            m.samples
                .iter()
                .map(move |v| Circle::new((SegmentValue::CenterOf(i), *v), 3, BLACK.mix(0.5).filled()))
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// The axes every chart here shares: one labelled bar slot per subject, `y_desc` on the y axis.
fn draw_axes(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<
            plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize>,
            plotters::coord::types::RangedCoordf64,
        >,
    >,
    labels: &[String],
    y_desc: String,
) -> Result<(), String> {
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .x_labels(labels.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| e.to_string())
}
