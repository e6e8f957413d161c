//! The report: its data model (what `report.json` holds, validated by
//! `bench/schema/report.schema.json`), the derived ratios and targets, and the writers.

pub mod charts;
pub mod derive;
pub mod markdown;

use crate::config::{Config, Scenario, Sizes};
use crate::environment::{Environment, Place};
use crate::stats::Stats;
use serde::{Deserialize, Serialize};

/// The version of the report.json layout (2: `subjects`, gVisor and the two QEMU peers).
pub const SCHEMA_VERSION: u32 = 2;

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
    /// `container`, `vm`, `native`, a peer (`crun`, `runc`, `runsc`, `qemu-microvm`,
    /// `qemu-microvm-default`, `sandbox-runtime`), or `SUBJECT/VARIANT` (e.g. `container/volume`,
    /// `runsc/root`).
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

/// One exact command line the bench ran for a subject (shell-quoted when printed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandLine {
    pub scenario: Scenario,
    /// What the command was run for (`ready`, `true`, `hold`, `workload`, ...).
    pub purpose: String,
    pub argv: Vec<String>,
}

/// A named configuration value of a subject (a kernel command line, a kernel file, a platform).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub value: String,
}

/// A configuration file a subject was given: an OCI `config.json` (whole, or as the fields a
/// scenario changed in it), or the guest plan a VM read from its plan disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    pub name: String,
    pub content: serde_json::Value,
}

/// How one subject (a mode or a peer) was run, so that a reader can reproduce or dispute every
/// number of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectSetup {
    pub subject: String,
    /// What it is, in a sentence.
    pub description: String,
    pub settings: Vec<Setting>,
    pub commands: Vec<CommandLine>,
    pub configs: Vec<ConfigFile>,
}

impl SubjectSetup {
    pub fn new(subject: &str, description: impl Into<String>) -> SubjectSetup {
        SubjectSetup {
            subject: subject.to_string(),
            description: description.into(),
            settings: Vec::new(),
            commands: Vec::new(),
            configs: Vec::new(),
        }
    }

    /// Sets `name` (replacing an earlier value).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.settings.iter_mut().find(|s| s.name == name) {
            Some(s) => s.value = value,
            None => self.settings.push(Setting {
                name: name.to_string(),
                value,
            }),
        }
    }

    /// Records a command line, once per scenario and purpose.
    pub fn command(&mut self, scenario: Scenario, purpose: &str, argv: Vec<String>) {
        if !self
            .commands
            .iter()
            .any(|c| c.scenario == scenario && c.purpose == purpose)
        {
            self.commands.push(CommandLine {
                scenario,
                purpose: purpose.to_string(),
                argv,
            });
        }
    }

    /// Records a configuration file, once per name.
    pub fn config(&mut self, name: &str, content: serde_json::Value) {
        if !self.configs.iter().any(|c| c.name == name) {
            self.configs.push(ConfigFile {
                name: name.to_string(),
                content,
            });
        }
    }
}

/// `argv` as one shell command line (single quotes where a word needs them).
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./=:,@%+-".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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
    /// Each subject's exact command lines and configuration.
    pub subjects: Vec<SubjectSetup>,
    pub failures: Vec<Failure>,
    /// SVG file names, relative to the report directory.
    pub charts: Vec<String>,
    pub duration_seconds: f64,
}

impl Report {
    /// How `subject` was run, if it was.
    pub fn subject(&self, subject: &str) -> Option<&SubjectSetup> {
        self.subjects.iter().find(|s| s.subject == subject)
    }

    /// The series of `subject`'s `metric` in `scenario`.
    pub fn find(&self, scenario: Scenario, subject: &str, metric: &str) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.scenario == scenario && m.subject == subject && m.metric == metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_only_what_needs_it() {
        let argv: Vec<String> = ["qemu-system-x86_64", "-append", "console=ttyS0 quiet", "it's", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_line(&argv),
            "qemu-system-x86_64 -append 'console=ttyS0 quiet' 'it'\\''s' ''"
        );
    }

    #[test]
    fn a_subject_records_each_command_and_config_once() {
        let mut s = SubjectSetup::new("runsc", "gVisor");
        s.command(Scenario::Boot, "true", vec!["runsc".into(), "run".into()]);
        s.command(Scenario::Boot, "true", vec!["other".into()]);
        s.command(Scenario::Cpu, "workload", vec!["runsc".into()]);
        s.set("platform", "ptrace");
        s.set("platform", "systrap");
        s.config("config.json", serde_json::json!({"a": 1}));
        s.config("config.json", serde_json::json!({"a": 2}));
        assert_eq!(s.commands.len(), 2);
        assert_eq!(s.commands[0].argv, vec!["runsc", "run"]);
        assert_eq!(s.settings.len(), 1);
        assert_eq!(s.settings[0].value, "systrap");
        assert_eq!(s.configs[0].content["a"], 1);
    }
}
