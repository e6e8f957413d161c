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

#[cfg(test)]
mod tests {
    //! This host's cgroup2 hierarchy carries no controllers (they are bound to v1), so the v2
    //! file handling is checked on a directory laid out like a cgroup2 one.
    use super::*;

    fn fake_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn read(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn limits_go_to_the_v2_files_and_swap_is_closed() {
        let cg = fake_dir(&[
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("cpu.max", ""),
            ("pids.max", ""),
        ]);
        let limits = Limits {
            memory_bytes: Some(256 << 20),
            cpus: Some(1.5),
            pids: Some(64),
        };
        for c in Controller::ALL {
            apply(cg.path(), c, &limits).unwrap();
        }
        assert_eq!(read(cg.path(), "memory.max"), "268435456");
        assert_eq!(read(cg.path(), "memory.swap.max"), "0");
        assert_eq!(read(cg.path(), "cpu.max"), "150000 100000");
        assert_eq!(read(cg.path(), "pids.max"), "64");
    }

    #[test]
    fn a_missing_limit_file_is_an_error_naming_it() {
        let cg = tempfile::tempdir().unwrap();
        let limits = Limits {
            pids: Some(5),
            ..Limits::default()
        };
        let msg = apply(cg.path(), Controller::Pids, &limits)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("pids.max"), "{msg}");
    }

    #[test]
    fn controllers_are_enabled_only_where_missing() {
        let root = fake_dir(&[("cgroup.subtree_control", "cpu memory\n")]);
        fs::create_dir(root.path().join(super::super::PARENT)).unwrap();
        let parent = root.path().join(super::super::PARENT);
        fs::write(parent.join("cgroup.subtree_control"), "").unwrap();
        enable(root.path(), Controller::Memory).unwrap();
        assert_eq!(read(root.path(), "cgroup.subtree_control"), "cpu memory\n");
        assert_eq!(read(&parent, "cgroup.subtree_control"), "+memory");
        enable(root.path(), Controller::Pids).unwrap();
        assert_eq!(read(root.path(), "cgroup.subtree_control"), "+pids");
    }

    #[test]
    fn oom_and_stats_come_from_the_v2_files() {
        let cg = fake_dir(&[
            (
                "memory.events",
                "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
            ("memory.current", "1048576\n"),
            ("memory.peak", "33554432\n"),
            (
                "cpu.stat",
                "usage_usec 900\nnr_periods 12\nnr_throttled 11\nthrottled_usec 841584\n",
            ),
            ("pids.current", "3\n"),
        ]);
        assert!(oom_killed(cg.path()));
        let mut stats = CgroupStats::default();
        for c in Controller::ALL {
            super::stats(cg.path(), c, &mut stats);
        }
        assert_eq!(
            stats,
            CgroupStats {
                memory_current_bytes: Some(1 << 20),
                memory_peak_bytes: Some(32 << 20),
                cpu_nr_periods: Some(12),
                cpu_nr_throttled: Some(11),
                cpu_throttled_usec: Some(841584),
                pids_current: Some(3),
            }
        );
        let calm = fake_dir(&[("memory.events", "oom 0\noom_kill 0\n")]);
        assert!(!oom_killed(calm.path()));
    }
}
