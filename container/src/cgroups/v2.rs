//! The cgroup v2 (unified) side of a sandbox cgroup: enabling controllers down to `sandbox/`,
//! writing limits, and reading the OOM counter and statistics.

use super::files::{read_keyed, read_u64, write};
use super::{CgroupError, CgroupStats, Controller, Limits, CPU_PERIOD_US};
use std::fs;
use std::path::Path;

/// Makes `controller` available to the children of `root/sandbox` by enabling it in the
/// `cgroup.subtree_control` of the root and of `sandbox/` (which must exist).
pub(super) fn enable(root: &Path, controller: Controller) -> Result<(), CgroupError> {
    for dir in [root.to_path_buf(), root.join(super::PARENT)] {
        let control = dir.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&control).unwrap_or_default();
        if enabled.split_whitespace().any(|c| c == controller.name()) {
            continue;
        }
        write(&control, &format!("+{}", controller.name()))?;
    }
    Ok(())
}

/// Writes the limit `limits` sets for `controller` into the sandbox's cgroup `dir`.
pub(super) fn apply(dir: &Path, controller: Controller, limits: &Limits) -> Result<(), CgroupError> {
    match controller {
        Controller::Memory => {
            if let Some(bytes) = limits.memory_bytes {
                write(&dir.join("memory.max"), &bytes.to_string())?;
                // Without swap the limit is the whole budget, so an overrun is an OOM kill
                // rather than a slow swap-out.
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
            }
        }
        Controller::Cpu => {
            if let Some(quota) = super::cpu_quota_us(limits)? {
                write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        }
        Controller::Pids => {
            if let Some(pids) = limits.pids {
                write(&dir.join("pids.max"), &pids.to_string())?;
            }
        }
    }
    Ok(())
}

/// Whether the kernel OOM-killed a process of the cgroup (`oom_kill` in memory.events).
pub(super) fn oom_killed(dir: &Path) -> bool {
    read_keyed(&dir.join("memory.events"), "oom_kill").is_some_and(|n| n > 0)
}

/// Fills in the figures `controller` provides.
pub(super) fn stats(dir: &Path, controller: Controller, stats: &mut CgroupStats) {
    match controller {
        Controller::Memory => {
            stats.memory_current_bytes = read_u64(&dir.join("memory.current"));
            stats.memory_peak_bytes = read_u64(&dir.join("memory.peak"));
        }
        Controller::Cpu => {
            let stat = dir.join("cpu.stat");
            stats.cpu_nr_periods = read_keyed(&stat, "nr_periods");
            stats.cpu_nr_throttled = read_keyed(&stat, "nr_throttled");
            stats.cpu_throttled_usec = read_keyed(&stat, "throttled_usec");
        }
        Controller::Pids => stats.pids_current = read_u64(&dir.join("pids.current")),
    }
}
