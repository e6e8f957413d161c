//! Where this host mounts its cgroup hierarchies, read from `/proc/self/mountinfo`, and which
//! hierarchy each controller the sandbox uses (memory, cpu, pids) lives on.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// How the host arranges its cgroup hierarchies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Controllers on cgroup v1 hierarchies, no cgroup2 mounted.
    V1,
    /// Everything on one cgroup2 hierarchy (also reported when nothing is mounted at all; creating
    /// a cgroup then fails naming the missing controller).
    V2,
    /// Controllers on v1 hierarchies plus a cgroup2 hierarchy (usually `/sys/fs/cgroup/unified`).
    Hybrid,
}

/// One cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    pub path: PathBuf,
    /// The controllers bound to it, plus `name=...` for named hierarchies such as systemd's.
    pub controllers: Vec<String>,
}

/// The cgroup hierarchies mounted in this mount namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    pub v1: Vec<V1Mount>,
    /// Where cgroup2 is mounted, if it is.
    pub v2: Option<PathBuf>,
}

impl Mounts {
    /// Reads the hierarchies of the calling process's mount namespace.
    pub fn read() -> io::Result<Mounts> {
        Ok(Mounts::parse(&fs::read_to_string("/proc/self/mountinfo")?))
    }

    /// Parses mountinfo text (see proc(5)); lines that are not cgroup mounts are ignored, and a
    /// hierarchy mounted twice is kept once (its first mount point).
    pub fn parse(mountinfo: &str) -> Mounts {
        let mut mounts = Mounts::default();
        for entry in sandbox_protocol::mountinfo::parse(mountinfo) {
            let path = PathBuf::from(entry.target);
            match entry.fstype.as_str() {
                "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(path),
                "cgroup" => {
                    let controllers: Vec<String> = entry
                        .super_options
                        .split(',')
                        .filter(|o| is_controller_option(o))
                        .map(str::to_string)
                        .collect();
                    if !mounts.v1.iter().any(|m| m.controllers == controllers) {
                        mounts.v1.push(V1Mount { path, controllers });
                    }
                }
                _ => {}
            }
        }
        mounts
    }

    /// Classifies the host: see [`Layout`].
    pub fn layout(&self) -> Layout {
        let v1_controllers = self
            .v1
            .iter()
            .any(|m| m.controllers.iter().any(|c| !c.starts_with("name=")));
        match (v1_controllers, self.v2.is_some()) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::V1,
            (false, _) => Layout::V2,
        }
    }

    /// The v1 hierarchy `controller` is bound to.
    pub fn v1_for(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
            .map(|m| m.path.as_path())
    }

    /// Every hierarchy's mount point, v1 first, then cgroup2.
    pub fn all_roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self.v1.iter().map(|m| m.path.clone()).collect();
        roots.extend(self.v2.clone());
        roots
    }
}

/// The superblock options of a v1 cgroup mount that name controllers (or a named hierarchy),
/// as opposed to flags like `rw` or `nsdelegate`.
fn is_controller_option(opt: &str) -> bool {
    const FLAGS: &[&str] = &[
        "rw",
        "ro",
        "noprefix",
        "xattr",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    !opt.is_empty() && !FLAGS.contains(&opt) && !opt.starts_with("release_agent=")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V1: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
";

    const V2: &str = "\
24 20 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
27 24 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_host_has_v1_controllers_and_unified_v2() {
        let m = Mounts::parse(HYBRID);
        assert_eq!(m.layout(), Layout::Hybrid);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(m.v1_for("memory"), Some(Path::new("/sys/fs/cgroup/memory")));
        assert_eq!(m.v1_for("cpu"), Some(Path::new("/sys/fs/cgroup/cpu")));
        assert_eq!(m.v1_for("pids"), Some(Path::new("/sys/fs/cgroup/pids")));
        assert_eq!(
            m.v1_for("name=systemd"),
            Some(Path::new("/sys/fs/cgroup/systemd"))
        );
        assert_eq!(m.v1_for("rw"), None);
        assert_eq!(m.v1_for("xattr"), None);
    }

    #[test]
    fn v1_host_with_comounted_cpu_and_cpuacct() {
        let m = Mounts::parse(V1);
        assert_eq!(m.layout(), Layout::V1);
        assert_eq!(m.v2, None);
        assert_eq!(m.v1_for("cpu"), Some(Path::new("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(m.v1_for("cpuacct"), Some(Path::new("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(m.v1[0].controllers, vec!["name=systemd".to_string()]);
    }

    #[test]
    fn v2_host_has_only_cgroup2() {
        let m = Mounts::parse(V2);
        assert_eq!(m.layout(), Layout::V2);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert!(m.v1.is_empty());
        assert_eq!(m.all_roots(), vec![PathBuf::from("/sys/fs/cgroup")]);
    }

    #[test]
    fn named_v1_hierarchy_alone_does_not_make_a_v1_host() {
        let text = format!(
            "{}40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n",
            V2
        );
        assert_eq!(Mounts::parse(&text).layout(), Layout::V2);
    }

    #[test]
    fn escaped_mount_points_and_duplicate_mounts() {
        let text = "\
1 0 0:1 / /cg\\040root rw - cgroup2 cgroup2 rw
2 0 0:2 / /a/memory rw - cgroup cgroup rw,memory
3 0 0:2 / /b/memory rw - cgroup cgroup rw,memory
";
        let m = Mounts::parse(text);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/cg root")));
        assert_eq!(m.v1.len(), 1);
        assert_eq!(m.v1_for("memory"), Some(Path::new("/a/memory")));
    }

    #[test]
    fn nothing_mounted_reports_v2() {
        let m = Mounts::parse("22 28 0:20 / /sys rw - sysfs sysfs rw\n");
        assert_eq!(m.layout(), Layout::V2);
        assert!(m.all_roots().is_empty());
    }
}
