//! The cgroup v2 (unified) side of a sandbox cgroup: enabling controllers down to the
//! sandbox's directory, writing limits in the v2 file names, the freezer, and reading the OOM
//! counter and statistics.

use super::files::{read_keyed, read_u64, write};
use super::{devices, CgroupError, CgroupStats, Controller};
use sandbox_protocol::isolation::ResourcePlan;
use std::fs;
use std::path::{Path, PathBuf};

/// Makes controller `name` available to the sandbox's directory by enabling it in the
/// `cgroup.subtree_control` of every level above it (`chain`: the root first).
pub(super) fn enable(chain: &[PathBuf], name: &str) -> Result<(), CgroupError> {
    for dir in chain {
        let control = dir.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&control).unwrap_or_default();
        if enabled.split_whitespace().any(|c| c == name) {
            continue;
        }
        write(&control, &format!("+{name}"))?;
    }
    Ok(())
}

/// Writes the limits `r` sets for `controller` into the sandbox's cgroup `dir`.
pub(super) fn apply(dir: &Path, controller: Controller, r: &ResourcePlan) -> Result<(), CgroupError> {
    let limit = |v: i64| if v < 0 { "max".to_string() } else { v.to_string() };
    match controller {
        Controller::Memory => {
            let m = &r.memory;
            if let Some(l) = m.limit {
                write(&dir.join("memory.max"), &limit(l))?;
            }
            if let Some(v) = m.reservation {
                write(&dir.join("memory.low"), &limit(v))?;
            }
            // OCI's swap is memory plus swap (v1's memsw); cgroup2 limits swap alone.
            if let Some(swap) = m.swap {
                let file = dir.join("memory.swap.max");
                if file.exists() {
                    let value = match (swap, m.limit) {
                        (s, _) if s < 0 => "max".to_string(),
                        (s, Some(l)) if l >= 0 => s.saturating_sub(l).max(0).to_string(),
                        (s, _) => s.to_string(),
                    };
                    write(&file, &value)?;
                }
            }
            if m.disable_oom_killer == Some(true) {
                let file = dir.join("memory.oom.group");
                if file.exists() {
                    write(&file, "0")?;
                }
            }
        }
        Controller::Cpu => {
            let c = &r.cpu;
            if let Some(shares) = c.shares {
                // The runc/crun conversion of v1 shares (2..262144) to v2 weight (1..10000).
                let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
                write(&dir.join("cpu.weight"), &weight.to_string())?;
            }
            if c.quota.is_some() || c.period.is_some() {
                let period = c.period.unwrap_or(super::CPU_PERIOD_US);
                let quota = c.quota.map_or("max".to_string(), limit);
                write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
            }
        }
        Controller::Cpuset => {
            if let Some(cpus) = &r.cpu.cpus {
                write(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = &r.cpu.mems {
                write(&dir.join("cpuset.mems"), mems)?;
            }
        }
        Controller::Pids => {
            if let Some(n) = r.pids {
                write(&dir.join("pids.max"), &limit(n))?;
            }
        }
        Controller::Devices => devices::attach_v2(dir, &r.devices)?,
        Controller::Blkio => {
            for (file, major, minor, rate) in &r.block_io.throttle {
                let key = match file.as_str() {
                    "blkio.throttle.read_bps_device" => "rbps",
                    "blkio.throttle.write_bps_device" => "wbps",
                    "blkio.throttle.read_iops_device" => "riops",
                    "blkio.throttle.write_iops_device" => "wiops",
                    _ => continue,
                };
                write(&dir.join("io.max"), &format!("{major}:{minor} {key}={rate}"))?;
            }
            if let Some(w) = r.block_io.weight {
                // v1 weights run 10..1000, v2's 1..10000.
                let weight = 1 + (u64::from(w).clamp(10, 1000) - 10) * 9999 / 990;
                write(&dir.join("io.weight"), &weight.to_string())?;
            }
        }
        Controller::Hugetlb => {
            for (size, bytes) in &r.hugepages {
                write(&dir.join(format!("hugetlb.{size}.max")), &bytes.to_string())?;
            }
        }
        Controller::Freezer | Controller::NetCls | Controller::NetPrio => {}
    }
    Ok(())
}

/// Freezes or thaws the cgroup (`cgroup.freeze`) and waits for `cgroup.events` to agree.
pub(super) fn freeze(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
    let want = u64::from(frozen);
    for _ in 0..1000 {
        if read_keyed(&dir.join("cgroup.events"), "frozen") == Some(want) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(CgroupError::StillBusy {
        path: dir.join("cgroup.freeze"),
        pids: Vec::new(),
    })
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
            stats.memory_limit_bytes = read_u64(&dir.join("memory.max"));
        }
        Controller::Cpu => {
            let stat = dir.join("cpu.stat");
            stats.cpu_usage_usec = read_keyed(&stat, "usage_usec");
            stats.cpu_nr_periods = read_keyed(&stat, "nr_periods");
            stats.cpu_nr_throttled = read_keyed(&stat, "nr_throttled");
            stats.cpu_throttled_usec = read_keyed(&stat, "throttled_usec");
        }
        Controller::Pids => {
            stats.pids_current = read_u64(&dir.join("pids.current"));
            stats.pids_limit = read_u64(&dir.join("pids.max"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    //! This host's cgroup2 hierarchy carries no controllers (they are bound to v1), so the v2
    //! file handling is checked on a directory laid out like a cgroup2 one.
    use super::*;
    use sandbox_protocol::isolation::{CpuLimits, MemoryLimits};

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

    fn limits() -> ResourcePlan {
        ResourcePlan {
            memory: MemoryLimits {
                limit: Some(256 << 20),
                swap: Some(256 << 20),
                ..MemoryLimits::default()
            },
            cpu: CpuLimits {
                quota: Some(150_000),
                period: Some(100_000),
                ..CpuLimits::default()
            },
            pids: Some(64),
            ..ResourcePlan::default()
        }
    }

    #[test]
    fn limits_go_to_the_v2_files_and_swap_is_closed() {
        let cg = fake_dir(&[
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("cpu.max", ""),
            ("pids.max", ""),
        ]);
        for c in [Controller::Memory, Controller::Cpu, Controller::Pids] {
            apply(cg.path(), c, &limits()).unwrap();
        }
        assert_eq!(read(cg.path(), "memory.max"), "268435456");
        assert_eq!(read(cg.path(), "memory.swap.max"), "0");
        assert_eq!(read(cg.path(), "cpu.max"), "150000 100000");
        assert_eq!(read(cg.path(), "pids.max"), "64");
    }

    #[test]
    fn a_missing_limit_file_is_an_error_naming_it() {
        let cg = tempfile::tempdir().unwrap();
        let msg = apply(cg.path(), Controller::Pids, &limits())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("pids.max"), "{msg}");
    }

    #[test]
    fn controllers_are_enabled_only_where_missing() {
        let root = fake_dir(&[("cgroup.subtree_control", "cpu memory\n")]);
        let parent = root.path().join("sandbox");
        fs::create_dir(&parent).unwrap();
        fs::write(parent.join("cgroup.subtree_control"), "").unwrap();
        let chain = [root.path().to_path_buf(), parent.clone()];
        enable(&chain, "memory").unwrap();
        assert_eq!(read(root.path(), "cgroup.subtree_control"), "cpu memory\n");
        assert_eq!(read(&parent, "cgroup.subtree_control"), "+memory");
        enable(&chain, "pids").unwrap();
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
            ("memory.max", "max\n"),
            (
                "cpu.stat",
                "usage_usec 900\nnr_periods 12\nnr_throttled 11\nthrottled_usec 841584\n",
            ),
            ("pids.current", "3\n"),
            ("pids.max", "64\n"),
        ]);
        assert!(oom_killed(cg.path()));
        let mut stats = CgroupStats::default();
        for c in [Controller::Memory, Controller::Cpu, Controller::Pids] {
            super::stats(cg.path(), c, &mut stats);
        }
        assert_eq!(
            stats,
            CgroupStats {
                memory_current_bytes: Some(1 << 20),
                memory_peak_bytes: Some(32 << 20),
                memory_limit_bytes: None,
                cpu_usage_usec: Some(900),
                cpu_nr_periods: Some(12),
                cpu_nr_throttled: Some(11),
                cpu_throttled_usec: Some(841584),
                pids_current: Some(3),
                pids_limit: Some(64),
            }
        );
        let calm = fake_dir(&[("memory.events", "oom 0\noom_kill 0\n")]);
        assert!(!oom_killed(calm.path()));
    }
}
