//! The cgroup v1 side of a sandbox cgroup (v1 and hybrid hosts): one directory per controller
//! hierarchy, limits in the v1 file names, and the v1 OOM counter and statistics.

use super::files::{read_keyed, read_u64, write};
use super::{CgroupError, CgroupStats, Controller, Limits, CPU_PERIOD_US};
use std::path::Path;

/// Writes the limit `limits` sets for `controller` into the sandbox's cgroup `dir` on that
/// controller's hierarchy.
pub(super) fn apply(dir: &Path, controller: Controller, limits: &Limits) -> Result<(), CgroupError> {
    match controller {
        Controller::Memory => {
            if let Some(bytes) = limits.memory_bytes {
                let value = bytes.to_string();
                write(&dir.join("memory.limit_in_bytes"), &value)?;
                // memory+swap gets the same budget, so the workload cannot escape into swap;
                // without swap accounting, the next best thing is not to swap at all.
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &value)?;
                } else {
                    write(&dir.join("memory.swappiness"), "0")?;
                }
            }
        }
        Controller::Cpu => {
            if let Some(quota) = super::cpu_quota_us(limits)? {
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
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

/// Whether the kernel OOM-killed a process of the cgroup: the `oom_kill` counter of
/// memory.oom_control (kernel 4.13 and later); on older kernels, whether the limit was ever hit
/// (memory.failcnt), which over-reports when reclaim alone kept the workload under its limit.
pub(super) fn oom_killed(dir: &Path) -> bool {
    match read_keyed(&dir.join("memory.oom_control"), "oom_kill") {
        Some(kills) => kills > 0,
        None => read_u64(&dir.join("memory.failcnt")).is_some_and(|n| n > 0),
    }
}

/// Fills in the figures `controller` provides.
pub(super) fn stats(dir: &Path, controller: Controller, stats: &mut CgroupStats) {
    match controller {
        Controller::Memory => {
            stats.memory_current_bytes = read_u64(&dir.join("memory.usage_in_bytes"));
            stats.memory_peak_bytes = read_u64(&dir.join("memory.max_usage_in_bytes"));
        }
        Controller::Cpu => {
            let stat = dir.join("cpu.stat");
            stats.cpu_nr_periods = read_keyed(&stat, "nr_periods");
            stats.cpu_nr_throttled = read_keyed(&stat, "nr_throttled");
            stats.cpu_throttled_usec = read_keyed(&stat, "throttled_time").map(|ns| ns / 1000);
        }
        Controller::Pids => stats.pids_current = read_u64(&dir.join("pids.current")),
    }
}

#[cfg(test)]
mod tests {
    //! The real v1 hierarchies are exercised by tests/cgroups.rs; these cover the fallbacks a
    //! host without swap accounting or with an old kernel takes.
    use super::*;
    use std::fs;

    #[test]
    fn without_swap_accounting_swappiness_is_turned_off() {
        let cg = tempfile::tempdir().unwrap();
        for f in ["memory.limit_in_bytes", "memory.swappiness"] {
            fs::write(cg.path().join(f), "").unwrap();
        }
        let limits = Limits {
            memory_bytes: Some(1 << 20),
            ..Limits::default()
        };
        apply(cg.path(), Controller::Memory, &limits).unwrap();
        assert_eq!(
            fs::read_to_string(cg.path().join("memory.limit_in_bytes")).unwrap(),
            "1048576"
        );
        assert_eq!(
            fs::read_to_string(cg.path().join("memory.swappiness")).unwrap(),
            "0"
        );
    }

    #[test]
    fn old_kernels_fall_back_to_the_failure_count() {
        let cg = tempfile::tempdir().unwrap();
        fs::write(
            cg.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\n",
        )
        .unwrap();
        fs::write(cg.path().join("memory.failcnt"), "0\n").unwrap();
        assert!(!oom_killed(cg.path()));
        fs::write(cg.path().join("memory.failcnt"), "7\n").unwrap();
        assert!(oom_killed(cg.path()));
        fs::write(cg.path().join("memory.oom_control"), "under_oom 0\noom_kill 0\n").unwrap();
        assert!(!oom_killed(cg.path()), "the counter wins over failcnt");
    }
}
