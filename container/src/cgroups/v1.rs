//! The cgroup v1 side of a sandbox cgroup (v1 and hybrid hosts): one directory per controller
//! hierarchy, limits in the v1 file names, the v1 freezer, OOM counter and statistics.

use super::files::{read_keyed, read_u64, write};
use super::{devices, CgroupError, CgroupStats, Controller};
use sandbox_protocol::isolation::ResourcePlan;
use std::fs;
use std::path::Path;

/// Writes the limits `r` sets for `controller` into the sandbox's cgroup `dir` on that
/// controller's hierarchy.
pub(super) fn apply(dir: &Path, controller: Controller, r: &ResourcePlan) -> Result<(), CgroupError> {
    match controller {
        Controller::Memory => memory(dir, r),
        Controller::Cpu => cpu(dir, r),
        Controller::Cpuset => {
            if let Some(cpus) = &r.cpu.cpus {
                write(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = &r.cpu.mems {
                write(&dir.join("cpuset.mems"), mems)?;
            }
            Ok(())
        }
        Controller::Pids => match r.pids {
            Some(n) if n > 0 => write(&dir.join("pids.max"), &n.to_string()),
            Some(_) => write(&dir.join("pids.max"), "max"),
            None => Ok(()),
        },
        Controller::Devices => {
            // The list starts empty ("a" denied), then the plan's rules in order, then the
            // standard nodes and ptys every sandbox may use.
            write(&dir.join("devices.deny"), "a")?;
            for rule in r.devices.iter().chain(devices::default_rules().iter()) {
                let file = if rule.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(&dir.join(file), &devices::v1_line(rule))?;
            }
            Ok(())
        }
        Controller::Freezer => Ok(()),
        Controller::Blkio => {
            let b = &r.block_io;
            if let Some(w) = b.weight {
                write(&dir.join("blkio.weight"), &w.to_string())?;
            }
            if let Some(w) = b.leaf_weight {
                write(&dir.join("blkio.leaf_weight"), &w.to_string())?;
            }
            for (major, minor, weight, leaf) in &b.weight_devices {
                if let Some(w) = weight {
                    write(&dir.join("blkio.weight_device"), &format!("{major}:{minor} {w}"))?;
                }
                if let Some(w) = leaf {
                    write(
                        &dir.join("blkio.leaf_weight_device"),
                        &format!("{major}:{minor} {w}"),
                    )?;
                }
            }
            for (file, major, minor, rate) in &b.throttle {
                write(&dir.join(file), &format!("{major}:{minor} {rate}"))?;
            }
            Ok(())
        }
        Controller::Hugetlb => {
            for (size, limit) in &r.hugepages {
                write(
                    &dir.join(format!("hugetlb.{size}.limit_in_bytes")),
                    &limit.to_string(),
                )?;
            }
            Ok(())
        }
        Controller::NetCls => match r.network.class_id {
            Some(id) => write(&dir.join("net_cls.classid"), &id.to_string()),
            None => Ok(()),
        },
        Controller::NetPrio => {
            for (iface, prio) in &r.network.priorities {
                write(&dir.join("net_prio.ifpriomap"), &format!("{iface} {prio}"))?;
            }
            Ok(())
        }
    }
}

fn memory(dir: &Path, r: &ResourcePlan) -> Result<(), CgroupError> {
    let m = &r.memory;
    let value = |v: i64| if v < 0 { "-1".to_string() } else { v.to_string() };
    if let Some(limit) = m.limit {
        write(&dir.join("memory.limit_in_bytes"), &value(limit))?;
    }
    if let Some(swap) = m.swap {
        // memsw is memory plus swap, and may not be below the memory limit: written after it.
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, &value(swap))?;
        } else if Some(swap) == m.limit {
            // No swap accounting: the next best way to keep the workload out of swap.
            write(&dir.join("memory.swappiness"), "0")?;
        }
    }
    if let Some(v) = m.reservation {
        write(&dir.join("memory.soft_limit_in_bytes"), &value(v))?;
    }
    if let Some(v) = m.kernel {
        write(&dir.join("memory.kmem.limit_in_bytes"), &value(v))?;
    }
    if let Some(v) = m.kernel_tcp {
        write(&dir.join("memory.kmem.tcp.limit_in_bytes"), &value(v))?;
    }
    if let Some(v) = m.swappiness {
        write(&dir.join("memory.swappiness"), &v.to_string())?;
    }
    if m.disable_oom_killer == Some(true) {
        write(&dir.join("memory.oom_control"), "1")?;
    }
    Ok(())
}

fn cpu(dir: &Path, r: &ResourcePlan) -> Result<(), CgroupError> {
    let c = &r.cpu;
    if let Some(shares) = c.shares {
        write(&dir.join("cpu.shares"), &shares.to_string())?;
    }
    if c.quota.is_some() || c.period.is_some() {
        let period = c.period.unwrap_or(super::CPU_PERIOD_US);
        write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
        if let Some(quota) = c.quota {
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
    }
    if let Some(period) = c.realtime_period {
        write(&dir.join("cpu.rt_period_us"), &period.to_string())?;
    }
    if let Some(runtime) = c.realtime_runtime {
        write(&dir.join("cpu.rt_runtime_us"), &runtime.to_string())?;
    }
    Ok(())
}

/// A new cpuset cgroup starts with no CPUs and no memory nodes, and no process may join it
/// then: give `dir` its parent's, unless it has its own.
pub(super) fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = fs::read_to_string(dir.join(file)).unwrap_or_default();
        if own.trim().is_empty() {
            let inherited = fs::read_to_string(parent.join(file)).unwrap_or_default();
            write(&dir.join(file), inherited.trim())?;
        }
    }
    Ok(())
}

/// Freezes or thaws the cgroup and waits (up to a few seconds) for the kernel to finish.
pub(super) fn freeze(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let state = dir.join("freezer.state");
    for _ in 0..1000 {
        write(&state, want)?;
        if fs::read_to_string(&state).is_ok_and(|s| s.trim() == want) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(CgroupError::StillBusy {
        path: state,
        pids: Vec::new(),
    })
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
            stats.memory_limit_bytes = read_u64(&dir.join("memory.limit_in_bytes"));
        }
        Controller::Cpu => {
            let stat = dir.join("cpu.stat");
            stats.cpu_nr_periods = read_keyed(&stat, "nr_periods");
            stats.cpu_nr_throttled = read_keyed(&stat, "nr_throttled");
            stats.cpu_throttled_usec = read_keyed(&stat, "throttled_time").map(|ns| ns / 1000);
            stats.cpu_usage_usec = read_u64(&dir.join("cpuacct.usage")).map(|ns| ns / 1000);
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
    //! The real v1 hierarchies are exercised by tests/cgroups.rs; these cover the file names and
    //! the fallbacks a host without swap accounting or with an old kernel takes.
    use super::*;
    use sandbox_protocol::isolation::{CpuLimits, DeviceRule, MemoryLimits};

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let cg = tempfile::tempdir().unwrap();
        for f in files {
            fs::write(cg.path().join(f), "").unwrap();
        }
        cg
    }

    fn read(dir: &Path, f: &str) -> String {
        fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn without_swap_accounting_swappiness_is_turned_off() {
        let cg = dir_with(&["memory.limit_in_bytes", "memory.swappiness"]);
        let r = ResourcePlan {
            memory: MemoryLimits {
                limit: Some(1 << 20),
                swap: Some(1 << 20),
                ..MemoryLimits::default()
            },
            ..ResourcePlan::default()
        };
        apply(cg.path(), Controller::Memory, &r).unwrap();
        assert_eq!(read(cg.path(), "memory.limit_in_bytes"), "1048576");
        assert_eq!(read(cg.path(), "memory.swappiness"), "0");
    }

    #[test]
    fn cpu_writes_the_period_before_the_quota_and_the_shares() {
        let cg = dir_with(&["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"]);
        let r = ResourcePlan {
            cpu: CpuLimits {
                shares: Some(2048),
                quota: Some(50_000),
                period: Some(500_000),
                ..CpuLimits::default()
            },
            ..ResourcePlan::default()
        };
        apply(cg.path(), Controller::Cpu, &r).unwrap();
        assert_eq!(read(cg.path(), "cpu.shares"), "2048");
        assert_eq!(read(cg.path(), "cpu.cfs_period_us"), "500000");
        assert_eq!(read(cg.path(), "cpu.cfs_quota_us"), "50000");
    }

    #[test]
    fn device_rules_start_from_deny_all_and_end_with_the_defaults() {
        // A plain file keeps only the last write; the trace of writes is what matters here, so
        // check the last one is a default rule.
        let cg = dir_with(&["devices.deny", "devices.allow"]);
        let r = ResourcePlan {
            devices: vec![DeviceRule {
                allow: true,
                kind: 'c',
                major: Some(10),
                minor: Some(229),
                access: "rwm".into(),
            }],
            ..ResourcePlan::default()
        };
        apply(cg.path(), Controller::Devices, &r).unwrap();
        assert_eq!(read(cg.path(), "devices.deny"), "a");
        let last = devices::default_rules().last().map(devices::v1_line).unwrap();
        assert_eq!(read(cg.path(), "devices.allow"), last);
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

    #[test]
    fn a_new_cpuset_level_inherits_its_parents_cpus_and_nodes() {
        let parent = tempfile::tempdir().unwrap();
        fs::write(parent.path().join("cpuset.cpus"), "0-1\n").unwrap();
        fs::write(parent.path().join("cpuset.mems"), "0\n").unwrap();
        let child = parent.path().join("c");
        fs::create_dir(&child).unwrap();
        fs::write(child.join("cpuset.cpus"), "\n").unwrap();
        fs::write(child.join("cpuset.mems"), "\n").unwrap();
        inherit_cpuset(&child).unwrap();
        assert_eq!(read(&child, "cpuset.cpus"), "0-1");
        assert_eq!(read(&child, "cpuset.mems"), "0");
    }
}
