//! The report: its data model (what `report.json` holds, validated by
//! `bench/schema/report.schema.json`), the derived ratios and targets, and the writers.

pub mod charts;
pub mod derive;
pub mod markdown;

use crate::config::{Config, Scenario, Sizes};
use crate::environment::{Environment, Place};
use crate::stats::Stats;
use serde::{Deserialize, Serialize};

/// The version of the report.json layout.
pub const SCHEMA_VERSION: u32 = 1;

/// Whether smaller or larger values of a metric are better (for charts and ratios).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Better {
    Lower,
    Higher,
}

/// One measured series: a metric of one subject (a mode, a peer or native) in one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub scenario: Scenario,
    /// `container`, `vm`, `native`, `crun`, `runc`, `qemu-microvm`, or `MODE/VARIANT` (e.g.
    /// `container/volume`).
    pub subject: String,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    /// Where it was measured.
    pub place: Place,
    /// The measured runs (warm-ups excluded), in order.
    pub samples: Vec<f64>,
    pub stats: Stats,
}

/// The ratio of two subjects' medians of one metric, both from this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub scenario: Scenario,
    pub metric: String,
    pub numerator: String,
    pub denominator: String,
    /// median(numerator) / median(denominator).
    pub ratio: f64,
}

/// One of the targets and whether this run met it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    /// What is compared, in words.
    pub description: String,
    pub unit: String,
    /// Our median.
    pub measured: Option<f64>,
    /// The bound it must not exceed (a peer's median, or a fixed figure).
    pub limit: Option<f64>,
    /// `None` when either side was not measured in this run.
    pub met: Option<bool>,
    pub note: String,
}

/// A subject of a scenario that could not be measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub scenario: Scenario,
    pub subject: String,
    pub error: String,
}

/// Everything a bench run found (report.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub environment: Environment,
    pub config: Config,
    pub sizes: Sizes,
    pub measurements: Vec<Measurement>,
    pub ratios: Vec<Ratio>,
    pub targets: Vec<Target>,
    /// Skipped subjects and how to get them, workarounds applied (e.g. crun on hybrid cgroups).
    pub notes: Vec<String>,
    pub failures: Vec<Failure>,
    /// SVG file names, relative to the report directory.
    pub charts: Vec<String>,
    pub duration_seconds: f64,
}

impl Report {
    /// The series of `subject`'s `metric` in `scenario`.
    pub fn find(&self, scenario: Scenario, subject: &str, metric: &str) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.scenario == scenario && m.subject == subject && m.metric == metric)
    }
}
