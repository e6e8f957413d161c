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

/// Reads the running host's `/proc/self/mounts` and cgroup2 files.
pub fn inspect() -> CgroupReport {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    analyse(&mounts, |p| std::fs::read_to_string(p).ok())
}

/// Works out the layout and controllers from a mounts table, reading cgroup2 files with `read`.
pub fn analyse(mounts: &str, read: impl Fn(&Path) -> Option<String>) -> CgroupReport {
    let mut v1: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut v2: Vec<PathBuf> = Vec::new();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, mount, fstype, options, ..] = fields.as_slice() else {
            continue;
        };
        let mount = PathBuf::from(unescape(mount));
        match *fstype {
            "cgroup" => v1.push((mount, options.split(',').map(str::to_string).collect())),
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

/// Undoes the octal escapes (`\040` for a space) of /proc/mounts.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
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

    const HYBRID: &str = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
        cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
        cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
        cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n\
        cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n\
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";

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
        let mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
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
        let mounts =
            "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup /c cgroup rw,cpu,cpuacct 0 0\n";
        let r = analyse(mounts, |_| None);
        assert_eq!(r.layout, Layout::V1);
        assert_eq!(r.controllers[2].1, Controller::Missing);
        let check = to_check(&r);
        assert!(check.fix.unwrap().contains("pids"));
    }

    #[test]
    fn no_cgroup_mounts_fail() {
        let r = analyse("proc /proc proc rw 0 0\n", |_| None);
        assert_eq!(r.layout, Layout::None);
        assert_eq!(to_check(&r).verdict, super::super::report::Verdict::Fail);
    }

    #[test]
    fn mount_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
