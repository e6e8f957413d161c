//! [`Outcome`]: what one sandbox run ended with — status, phase timings, resource figures.

use serde::{Deserialize, Serialize};

/// Names of the phases both modes report (each mode reports the ones it has, in order).
pub mod phase {
    /// The launcher's own start (always 0).
    pub const LAUNCHER_START: &str = "launcher-start";
    /// Container: namespaces created and the process placed in its cgroup.
    pub const NAMESPACES_READY: &str = "namespaces-ready";
    /// Container: root filesystem mounted and pivoted into, /dev, /proc and volumes in place.
    pub const ROOTFS_READY: &str = "rootfs-ready";
    /// The guest program (init) is about to be executed.
    pub const EXEC: &str = "exec";
    /// The workload said `ready`.
    pub const READY: &str = "ready";
    /// The sandbox ended.
    pub const EXIT: &str = "exit";
}

/// One phase and when it was reached, in microseconds since the launcher started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    pub phase: String,
    pub micros: u64,
}

/// Resource figures read from the sandbox's cgroup (or the VM) after it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceFigures {
    pub memory_limit_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub memory_current_bytes: Option<u64>,
    pub cpu_nr_throttled: Option<u64>,
    pub cpu_throttled_usec: Option<u64>,
    pub pids_current: Option<u64>,
}

/// How a sandbox run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The status to exit with: the workload's, 128+N for a signal, 137 for an OOM kill.
    pub exit_status: i32,
    /// The kernel's OOM killer ended the workload (the memory limit was too small).
    pub oom_killed: bool,
    /// A one-line explanation when the ending needs one (e.g. the OOM kill and the limit).
    pub message: Option<String>,
    /// Phases in the order reached.
    pub timings: Vec<Timing>,
    pub resources: ResourceFigures,
}

impl Outcome {
    /// The time of `phase`, if it was reached.
    pub fn timing(&self, phase: &str) -> Option<u64> {
        self.timings.iter().find(|t| t.phase == phase).map(|t| t.micros)
    }

    /// The timings as aligned lines, for `--timings` (to stderr).
    pub fn timings_report(&self) -> String {
        let mut out = String::new();
        let mut previous = 0;
        for t in &self.timings {
            let delta = t.micros.saturating_sub(previous);
            out.push_str(&format!("{:<18} {:>10} µs  (+{} µs)\n", t.phase, t.micros, delta));
            previous = t.micros;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_report_lists_phases_in_order_with_deltas() {
        let outcome = Outcome {
            exit_status: 0,
            oom_killed: false,
            message: None,
            timings: vec![
                Timing {
                    phase: phase::LAUNCHER_START.into(),
                    micros: 0,
                },
                Timing {
                    phase: phase::EXEC.into(),
                    micros: 1500,
                },
            ],
            resources: ResourceFigures::default(),
        };
        let report = outcome.timings_report();
        assert!(report.contains("exec"));
        assert!(report.contains("(+1500 µs)"));
        assert_eq!(outcome.timing(phase::EXEC), Some(1500));
        assert_eq!(outcome.timing(phase::READY), None);
    }
}
