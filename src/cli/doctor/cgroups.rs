//! The cgroups check: which layout (v2, v1, hybrid) the host mounts, and on which hierarchy the
//! memory, cpu and pids controllers are usable.

use super::report::{Check, Needed};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The controllers sandbox limits with.
pub const WANTED: [&str; 3] = ["memory", "cpu", "pids"];

/// How the cgroup file systems are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Only cgroup2 (the unified hierarchy).
    V2,
    /// Only v1 hierarchies.
    V1,
    /// v1 controller hierarchies plus a cgroup2 mount (usually /sys/fs/cgroup/unified).
    Hybrid,
    /// No cgroup file system mounted.
    None,
}

/// Where one controller is usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "hierarchy", rename_all = "lowercase")]
pub enum Controller {
    /// A v1 hierarchy mounted at `mount`.
    V1 { mount: PathBuf },
    /// The v2 hierarchy at `mount`; `enabled` when the root's subtree_control already has it
    /// (otherwise it is listed in cgroup.controllers and can be enabled).
    V2 { mount: PathBuf, enabled: bool },
    /// Nowhere.
    Missing,
}

/// What the mounts show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupReport {
    pub layout: Layout,
    pub v2_mount: Option<PathBuf>,
    pub controllers: Vec<(String, Controller)>,
}

/// Reads the running host's `/proc/self/mountinfo` and cgroup2 files.
pub fn inspect() -> CgroupReport {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    analyse(&mountinfo, |p| std::fs::read_to_string(p).ok())
}

/// Works out the layout and controllers from a mountinfo table, reading cgroup2 files with
/// `read`.
pub fn analyse(mountinfo: &str, read: impl Fn(&Path) -> Option<String>) -> CgroupReport {
    let mut v1: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut v2: Vec<PathBuf> = Vec::new();
    for entry in sandbox_protocol::mountinfo::parse(mountinfo) {
        let mount = PathBuf::from(entry.target);
        match entry.fstype.as_str() {
            "cgroup" => v1.push((
                mount,
                entry.super_options.split(',').map(str::to_string).collect(),
            )),
            "cgroup2" => v2.push(mount),
            _ => {}
        }
    }
    // Prefer the canonical unified mount points when several cgroup2 mounts exist.
    v2.sort_by_key(|m| !(m == Path::new("/sys/fs/cgroup") || m == Path::new("/sys/fs/cgroup/unified")));
    let v2_mount = v2.into_iter().next();
    let layout = match (v1.is_empty(), &v2_mount) {
        (true, None) => Layout::None,
        (true, Some(_)) => Layout::V2,
        (false, None) => Layout::V1,
        (false, Some(_)) => Layout::Hybrid,
    };
    let (v2_available, v2_enabled) = match &v2_mount {
        Some(m) => (
            words(read(&m.join("cgroup.controllers"))),
            words(read(&m.join("cgroup.subtree_control"))),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let controllers = WANTED
        .iter()
        .map(|&name| {
            let in_v1 = v1.iter().find(|(_, opts)| opts.iter().any(|o| o == name));
            let where_ = match (in_v1, &v2_mount) {
                (Some((mount, _)), _) => Controller::V1 { mount: mount.clone() },
                (None, Some(mount)) if v2_available.iter().any(|c| c == name) => Controller::V2 {
                    mount: mount.clone(),
                    enabled: v2_enabled.iter().any(|c| c == name),
                },
                _ => Controller::Missing,
            };
            (name.to_string(), where_)
        })
        .collect();
    CgroupReport {
        layout,
        v2_mount,
        controllers,
    }
}

fn words(text: Option<String>) -> Vec<String> {
    text.unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

pub fn check() -> Check {
    to_check(&inspect())
}

fn to_check(report: &CgroupReport) -> Check {
    let layout = match (report.layout, &report.v2_mount) {
        (Layout::V2, Some(m)) => format!("v2 (unified at {})", m.display()),
        (Layout::Hybrid, Some(m)) => format!("hybrid (v1 controllers, cgroup2 at {})", m.display()),
        (Layout::V1, _) => "v1".to_string(),
        _ => "none".to_string(),
    };
    let placed: Vec<String> = report
        .controllers
        .iter()
        .map(|(name, c)| match c {
            Controller::V1 { .. } => format!("{name}: v1"),
            Controller::V2 { enabled: true, .. } => format!("{name}: v2"),
            Controller::V2 { enabled: false, .. } => format!("{name}: v2 (enable-able)"),
            Controller::Missing => format!("{name}: missing"),
        })
        .collect();
    let found = format!("layout {layout}; {}", placed.join(", "));
    let missing: Vec<&str> = report
        .controllers
        .iter()
        .filter(|(_, c)| *c == Controller::Missing)
        .map(|(n, _)| n.as_str())
        .collect();
    let data = json!({ "layout": report.layout, "v2_mount": report.v2_mount, "controllers": report
        .controllers.iter().map(|(n, c)| (n.clone(), serde_json::to_value(c).unwrap_or_default()))
        .collect::<serde_json::Map<_, _>>() });
    let check = if report.layout == Layout::None {
        Check::fail(
            "cgroups",
            Needed::Both,
            "no cgroup file system is mounted",
            "mount cgroup2: `mount -t cgroup2 none /sys/fs/cgroup`",
        )
    } else if !missing.is_empty() {
        Check::warn(
            "cgroups",
            Needed::Both,
            found,
            format!(
                "limits on {} will not apply: enable them in the kernel (cgroup_enable=…) or mount their hierarchy",
                missing.join(", ")
            ),
        )
    } else {
        Check::ok("cgroups", Needed::Both, found)
    };
    check.with_data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
        32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    #[test]
    fn hybrid_mounts_put_controllers_on_v1() {
        let r = analyse(HYBRID, |_| Some("hugetlb\n".to_string()));
        assert_eq!(r.layout, Layout::Hybrid);
        assert_eq!(r.v2_mount.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            r.controllers[0],
            (
                "memory".into(),
                Controller::V1 {
                    mount: "/sys/fs/cgroup/memory".into()
                }
            )
        );
        assert!(to_check(&r).found.contains("hybrid"));
    }

    #[test]
    fn pure_v2_reads_controllers_and_subtree_control() {
        let mounts = "27 24 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let r = analyse(mounts, |p| match p.file_name()?.to_str()? {
            "cgroup.controllers" => Some("cpuset cpu io memory pids\n".into()),
            "cgroup.subtree_control" => Some("memory pids\n".into()),
            _ => None,
        });
        assert_eq!(r.layout, Layout::V2);
        let mount = PathBuf::from("/sys/fs/cgroup");
        assert_eq!(
            r.controllers[0].1,
            Controller::V2 {
                mount: mount.clone(),
                enabled: true
            }
        );
        assert_eq!(
            r.controllers[1].1,
            Controller::V2 {
                mount,
                enabled: false
            }
        );
        assert_eq!(to_check(&r).verdict, super::super::report::Verdict::Ok);
    }

    #[test]
    fn v1_without_pids_warns_naming_it() {
        let mounts = "1 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      2 0 0:2 / /c rw - cgroup cgroup rw,cpu,cpuacct\n";
        let r = analyse(mounts, |_| None);
        assert_eq!(r.layout, Layout::V1);
        assert_eq!(r.controllers[2].1, Controller::Missing);
        let check = to_check(&r);
        assert!(check.fix.unwrap().contains("pids"));
    }

    #[test]
    fn no_cgroup_mounts_fail() {
        let r = analyse("22 28 0:20 / /proc rw - proc proc rw\n", |_| None);
        assert_eq!(r.layout, Layout::None);
        assert_eq!(to_check(&r).verdict, super::super::report::Verdict::Fail);
    }

    #[test]
    fn escaped_mount_points_are_read_whole() {
        let r = analyse("1 0 0:1 / /cg\\040v2 rw - cgroup2 cgroup2 rw\n", |_| None);
        assert_eq!(r.v2_mount.as_deref(), Some(Path::new("/cg v2")));
    }
}
