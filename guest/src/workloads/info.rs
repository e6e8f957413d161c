//! `info`: what the sandbox looks like from inside — kernel, identity, namespaces, cgroup and
//! its limits (v1, v2 or hybrid), mounts, CPUs, memory, block and network devices. Any source
//! that is missing is reported as null; `info` itself does not fail.

use super::WorkloadError;
use sandbox_protocol::mountinfo::{self, MountEntry};
use serde_json::{json, Map, Value};
use std::fs;
use std::path::{Path, PathBuf};

/// Runs `info`.
pub fn run() -> Result<Value, WorkloadError> {
    let mounts = mountinfo::current();
    let uts = nix::sys::utsname::uname().ok();
    let text = |s: &std::ffi::OsStr| Value::from(s.to_string_lossy().into_owned());
    Ok(json!({
        "workload": "info",
        "kernel_release": uts.as_ref().map(|u| text(u.release())),
        "kernel_version": uts.as_ref().map(|u| text(u.version())),
        "machine": uts.as_ref().map(|u| text(u.machine())),
        "hostname": uts.as_ref().map(|u| text(u.nodename())),
        "pid": std::process::id(),
        "uid": nix::unistd::getuid().as_raw(),
        "gid": nix::unistd::getgid().as_raw(),
        "namespaces": namespaces(),
        "cgroup": cgroup(mounts.as_deref().unwrap_or(&[])),
        "mounts": mounts.as_ref().map(|m| m.iter().map(mount_json).collect::<Vec<_>>()),
        "cpus": cpus(),
        "memory": memory(),
        "block_devices": block_devices(),
        "net_devices": net_devices(),
    }))
}

fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// `/proc/self/ns/*` as `{"pid": "pid:[4026531836]", ...}`.
fn namespaces() -> Value {
    let Ok(dir) = fs::read_dir("/proc/self/ns") else {
        return Value::Null;
    };
    let mut map = Map::new();
    for entry in dir.flatten() {
        if let Ok(target) = fs::read_link(entry.path()) {
            map.insert(
                entry.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into(),
            );
        }
    }
    Value::Object(map)
}

fn mount_json(m: &MountEntry) -> Value {
    json!({
        "target": m.target,
        "fstype": m.fstype,
        "source": m.source,
        "options": m.options,
    })
}

/// A limit file's content as JSON: a number, "unlimited", or null when unreadable.
fn limit_value(raw: Option<String>) -> Value {
    match raw.as_deref() {
        None | Some("") => Value::Null,
        Some("max") | Some("-1") => "unlimited".into(),
        Some(s) => match s.parse::<u64>() {
            // v1 reports "no limit" as a huge page-rounded number.
            Ok(n) if n >= 1 << 62 => "unlimited".into(),
            Ok(n) => n.into(),
            Err(_) => s.into(),
        },
    }
}

/// Where the cgroup `path` of a hierarchy mounted as `mount` appears in this mount namespace.
fn cgroup_dir(mount: &MountEntry, path: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        Some(path)
    } else {
        path.strip_prefix(mount.root.as_str())
    }?;
    Some(Path::new(&mount.target).join(rel.trim_start_matches('/')))
}

fn cgroup(mounts: &[MountEntry]) -> Value {
    let Some(text) = read_trim("/proc/self/cgroup") else {
        return Value::Null;
    };
    // Lines are "hierarchy-id:controllers:path".
    let lines: Vec<(&str, Vec<&str>, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let id = parts.next()?;
            let controllers = parts.next()?.split(',').filter(|c| !c.is_empty()).collect();
            Some((id, controllers, parts.next()?))
        })
        .collect();
    let v2_path = lines
        .iter()
        .find(|(id, c, _)| *id == "0" && c.is_empty())
        .map(|l| l.2);
    let has_v1 = lines.iter().any(|(_, c, _)| !c.is_empty());
    let version = match (has_v1, v2_path.is_some()) {
        (true, true) => "hybrid",
        (true, false) => "v1",
        _ => "v2",
    };
    let mut paths = Map::new();
    for (_, controllers, path) in &lines {
        let key = if controllers.is_empty() {
            "unified".to_string()
        } else {
            controllers.join(",")
        };
        paths.insert(key, (*path).into());
    }
    let v1_dir = |controller: &str| -> Option<PathBuf> {
        let (_, _, path) = lines.iter().find(|(_, c, _)| c.contains(&controller))?;
        let mount = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == controller))?;
        cgroup_dir(mount, path)
    };
    let (memory, pids, quota, period, path);
    if version == "v2" {
        let dir = v2_path.and_then(|p| {
            let mount = mounts.iter().find(|m| m.fstype == "cgroup2")?;
            cgroup_dir(mount, p)
        });
        let file = |name: &str| dir.as_ref().and_then(|d| read_trim(d.join(name)));
        memory = limit_value(file("memory.max"));
        pids = limit_value(file("pids.max"));
        let cpu_max = file("cpu.max");
        let mut parts = cpu_max.as_deref().unwrap_or("").split_whitespace();
        quota = limit_value(parts.next().map(str::to_string));
        period = limit_value(parts.next().map(str::to_string));
        path = v2_path.map(str::to_string);
    } else {
        let file = |controller: &str, name: &str| v1_dir(controller).and_then(|d| read_trim(d.join(name)));
        memory = limit_value(file("memory", "memory.limit_in_bytes"));
        pids = limit_value(file("pids", "pids.max"));
        quota = limit_value(file("cpu", "cpu.cfs_quota_us"));
        period = limit_value(file("cpu", "cpu.cfs_period_us"));
        path = lines
            .iter()
            .find(|(_, c, _)| c.contains(&"memory"))
            .map(|l| l.2.to_string());
    }
    json!({
        "version": version,
        "path": path,
        "paths": paths,
        "memory_limit_bytes": memory,
        "pids_max": pids,
        "cpu_quota_us": quota,
        "cpu_period_us": period,
    })
}

/// Counts the CPUs in a list like "0-3,5".
fn count_cpu_list(list: &str) -> Option<u64> {
    list.split(',')
        .filter(|p| !p.is_empty())
        .try_fold(0u64, |n, part| {
            Some(
                n + match part.split_once('-') {
                    Some((a, b)) => b.parse::<u64>().ok()?.checked_sub(a.parse::<u64>().ok()?)? + 1,
                    None => part.parse::<u64>().map(|_| 1).ok()?,
                },
            )
        })
}

fn cpus() -> Value {
    let model = fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    json!({
        "online": read_trim("/sys/devices/system/cpu/online").and_then(|l| count_cpu_list(&l)),
        "usable": std::thread::available_parallelism().ok().map(|n| n.get()),
        "model_name": model,
    })
}

fn memory() -> Value {
    let text = fs::read_to_string("/proc/meminfo").ok();
    let field = |name: &str| -> Option<u64> {
        text.as_deref()?
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    json!({ "total_kib": field("MemTotal"), "available_kib": field("MemAvailable") })
}

fn sorted_dir(path: &str) -> Option<Vec<(String, PathBuf)>> {
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(path)
        .ok()?
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    entries.sort();
    Some(entries)
}

fn block_devices() -> Value {
    let Some(entries) = sorted_dir("/sys/block") else {
        return Value::Null;
    };
    entries
        .iter()
        .map(|(name, dir)| {
            let sectors = read_trim(dir.join("size")).and_then(|s| s.parse::<u64>().ok());
            json!({
                "name": name,
                "size_bytes": sectors.map(|s| s * 512),
                "read_only": read_trim(dir.join("ro")).map(|r| r == "1"),
            })
        })
        .collect()
}

fn net_devices() -> Value {
    // name -> ["a.b.c.d/prefix", ...]
    let mut addresses: Vec<(String, String)> = Vec::new();
    if let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() {
        for ifa in ifaddrs {
            let addr = ifa
                .address
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|a| a.ip());
            let prefix = ifa
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| m.ip().to_bits().count_ones());
            if let Some(addr) = addr {
                let text = match prefix {
                    Some(p) => format!("{addr}/{p}"),
                    None => addr.to_string(),
                };
                addresses.push((ifa.interface_name, text));
            }
        }
    }
    let names: Vec<(String, Option<PathBuf>)> = match sorted_dir("/sys/class/net") {
        Some(entries) => entries.into_iter().map(|(n, p)| (n, Some(p))).collect(),
        None => {
            let mut names: Vec<String> = addresses.iter().map(|(n, _)| n.clone()).collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| (n, None)).collect()
        }
    };
    names
        .iter()
        .map(|(name, dir)| {
            let file = |f: &str| dir.as_ref().and_then(|d| read_trim(d.join(f)));
            json!({
                "name": name,
                "mac": file("address"),
                "mtu": file("mtu").and_then(|m| m.parse::<u32>().ok()),
                "state": file("operstate"),
                "ipv4": addresses.iter().filter(|(n, _)| n == name).map(|(_, a)| a.clone()).collect::<Vec<_>>(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_dirs_are_found_below_the_mounted_subtree() {
        let text = "37 35 0:30 /sandbox/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let m = mountinfo::parse(text);
        assert_eq!(
            cgroup_dir(&m[0], "/sandbox/x/inner"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/inner"))
        );
    }

    #[test]
    fn limits_read_as_numbers_or_unlimited() {
        assert_eq!(limit_value(Some("max".into())), json!("unlimited"));
        assert_eq!(
            limit_value(Some("9223372036854771712".into())),
            json!("unlimited")
        );
        assert_eq!(limit_value(Some("-1".into())), json!("unlimited"));
        assert_eq!(limit_value(Some("268435456".into())), json!(268435456u64));
        assert_eq!(limit_value(None), Value::Null);
        assert_eq!(count_cpu_list("0-3,5"), Some(5));
        assert_eq!(count_cpu_list("0"), Some(1));
    }
}
