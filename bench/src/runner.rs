//! The run loop: every series gets its warm-ups (discarded) and measured runs, a progress bar
//! on stderr, and failures recorded instead of aborting the other scenarios.

use crate::config::{Config, Mode, Scenario};
use crate::environment::{Environment, Place};
use crate::error::BenchError;
use crate::report::{Better, Failure, Measurement, SubjectSetup};
use crate::stats::Stats;
use indicatif::{ProgressBar, ProgressStyle};

/// One value a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: String,
    pub unit: &'static str,
    pub better: Better,
    pub value: f64,
}

impl Sample {
    pub fn lower(metric: impl Into<String>, unit: &'static str, value: f64) -> Sample {
        Sample {
            metric: metric.into(),
            unit,
            better: Better::Lower,
            value,
        }
    }

    pub fn higher(metric: impl Into<String>, unit: &'static str, value: f64) -> Sample {
        Sample {
            metric: metric.into(),
            unit,
            better: Better::Higher,
            value,
        }
    }
}

/// The state of a bench run.
pub struct Bench {
    pub config: Config,
    pub env: Environment,
    pub measurements: Vec<Measurement>,
    pub notes: Vec<String>,
    pub failures: Vec<Failure>,
    /// How each subject was run (command lines, configuration), in first-use order.
    pub subjects: Vec<SubjectSetup>,
    progress: ProgressBar,
}

impl Bench {
    pub fn new(config: Config, env: Environment) -> Bench {
        let progress = ProgressBar::new(0);
        progress.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Bench {
            config,
            env,
            measurements: Vec::new(),
            notes: Vec::new(),
            failures: Vec::new(),
            subjects: Vec::new(),
            progress,
        }
    }

    /// The modes this machine can run, noting once why VM mode is left out where it cannot.
    pub fn modes(&mut self) -> Vec<Mode> {
        let place = self.env.place;
        let modes = self.config.modes.clone();
        let mut out = Vec::new();
        for mode in modes {
            if mode == Mode::Vm && !place.can_boot_vms() {
                self.note_once(format!(
                    "VM mode skipped: this host's KVM ({}) cannot boot stock guest kernels; run \
                     `sandbox lab --tool crun --tool runc --tool runsc --tool qemu-system-x86_64 --include \
                     /usr/share/qemu:/usr/share/qemu --export /root/bench:DIR -- bench --out /root/bench` \
                     for both modes under the same emulation",
                    self.env.kvm_kind
                ));
                continue;
            }
            out.push(mode);
        }
        out
    }

    /// Adds `note` unless it is already there.
    pub fn note_once(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// The setup record of `subject`, created with `description` on first use.
    pub fn subject(&mut self, subject: &str, description: &str) -> &mut SubjectSetup {
        let i = match self.subjects.iter().position(|s| s.subject == subject) {
            Some(i) => i,
            None => {
                self.subjects.push(SubjectSetup::new(subject, description));
                self.subjects.len() - 1
            }
        };
        &mut self.subjects[i]
    }

    /// Records that `subject` of `scenario` could not be measured.
    pub fn fail(&mut self, scenario: Scenario, subject: &str, error: &BenchError) {
        self.progress.suspend(|| {
            eprintln!("sandbox bench: {scenario}/{subject}: {error}");
        });
        self.failures.push(Failure {
            scenario,
            subject: subject.to_string(),
            error: error.to_string(),
        });
    }

    /// Runs `one` for the warm-ups (discarded) and the measured runs, and records each metric's
    /// series. The first error ends the series and is recorded as a failure.
    pub fn series(
        &mut self,
        scenario: Scenario,
        subject: &str,
        mut one: impl FnMut(&Config) -> Result<Vec<Sample>, BenchError>,
    ) {
        let (warmup, runs) = (self.config.warmup, self.config.runs.max(1));
        self.progress.inc_length((warmup + runs) as u64);
        let mut collected: Vec<Sample> = Vec::new();
        for i in 0..warmup + runs {
            let phase = if i < warmup { "warm-up" } else { "run" };
            self.progress
                .set_message(format!("{scenario}: {subject} ({phase} {})", i + 1));
            match one(&self.config) {
                Ok(samples) if i >= warmup => collected.extend(samples),
                Ok(_) => {}
                Err(e) => {
                    self.progress.inc((warmup + runs - i) as u64);
                    self.fail(scenario, subject, &e);
                    return;
                }
            }
            self.progress.inc(1);
        }
        self.record(scenario, subject, collected);
    }

    /// Groups samples by metric (in first-seen order) into measurements.
    pub fn record(&mut self, scenario: Scenario, subject: &str, samples: Vec<Sample>) {
        let place = self.env.place;
        let mut order: Vec<&Sample> = Vec::new();
        for s in &samples {
            if !order.iter().any(|o| o.metric == s.metric) {
                order.push(s);
            }
        }
        for first in order {
            let values: Vec<f64> = samples
                .iter()
                .filter(|s| s.metric == first.metric)
                .map(|s| s.value)
                .collect();
            if let Some(stats) = Stats::of(&values) {
                self.measurements.push(Measurement {
                    scenario,
                    subject: subject.to_string(),
                    metric: first.metric.clone(),
                    unit: first.unit.to_string(),
                    better: first.better,
                    place,
                    samples: values,
                    stats,
                });
            }
        }
    }

    /// Prints a line above the progress bar.
    pub fn say(&self, line: &str) {
        self.progress.suspend(|| eprintln!("sandbox bench: {line}"));
    }

    /// Removes the progress bar.
    pub fn finish_progress(&self) {
        self.progress.finish_and_clear();
    }

    /// Where the numbers of this run come from.
    pub fn place(&self) -> Place {
        self.env.place
    }
}
