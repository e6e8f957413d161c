//! The plan's mounts (OCI `mounts`): made in list order, each destination resolved inside the
//! new root ([`crate::secure_path`]) before `pivot_root`, so a bind mount's source is still the
//! host path the plan names and a destination can never be a host path.
//!
//! Options follow mount(8) and the OCI spec: flags (`ro`, `nosuid`, `bind`, `rbind`, ...),
//! propagation (`shared`, `rslave`, ...), applied with a second mount call as the kernel wants,
//! and everything else passed to the filesystem as its data (`mode=755,size=65536k`).

use crate::secure_path::{self, InRoot, Leaf};
use crate::sys::{bind, ctx, io_step, mount_fs, propagation, remount_bind, Step};
use nix::mount::MsFlags;
use sandbox_protocol::isolation::MountPlan;
use std::path::Path;

/// A mount's options, sorted into what the kernel takes separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub flags: MsFlags,
    /// MS_SHARED, MS_SLAVE, MS_PRIVATE or MS_UNBINDABLE, possibly with MS_REC.
    pub propagation: MsFlags,
    pub bind: bool,
    pub recursive: bool,
    pub data: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            bind: false,
            recursive: false,
            data: Vec::new(),
        }
    }
}

impl Options {
    pub fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// Sorts mount options into flags, propagation, bind and filesystem data.
pub fn parse_options(options: &[String]) -> Options {
    let mut o = Options::default();
    for opt in options {
        let (set, clear): (MsFlags, MsFlags) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            // Options of other tools (podman's, crun's) that need nothing here.
            "tmpcopyup" | "notmpcopyup" | "idmap" | "ridmap" | "copy-symlink" | "z" | "Z" => continue,
            other => {
                let prop = match other {
                    "private" => Some(MsFlags::MS_PRIVATE),
                    "rprivate" => Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
                    "shared" => Some(MsFlags::MS_SHARED),
                    "rshared" => Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
                    "slave" => Some(MsFlags::MS_SLAVE),
                    "rslave" => Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
                    "unbindable" => Some(MsFlags::MS_UNBINDABLE),
                    "runbindable" => Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
                    _ => None,
                };
                match prop {
                    Some(p) => o.propagation = p,
                    None => o.data.push(other.to_string()),
                }
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    o
}

/// The propagation flags for a `rootfsPropagation` value; `None` for an unknown one.
pub fn propagation_of(name: &str) -> Option<MsFlags> {
    let o = parse_options(&[name.to_string()]);
    (!o.propagation.is_empty()).then_some(o.propagation)
}

/// Makes one mount inside `root` (the new root, not yet pivoted into).
pub fn mount_one(root: &Path, m: &MountPlan, rootless: bool) -> Step {
    let o = parse_options(&m.options);
    if m.is_bind() {
        return mount_bind(root, m, &o);
    }
    let target = secure_path::resolve(root, &m.destination, Leaf::Dir)?;
    let source = if m.source.is_empty() {
        m.kind.as_str()
    } else {
        m.source.as_str()
    };
    match m.kind.as_str() {
        "cgroup" | "cgroup2" => return mount_cgroup(&target, &o),
        "sysfs" if rootless => {
            // sysfs may only be mounted by the owner of the network namespace; without one of
            // its own a user-namespaced container gets the host's, read-only.
            if mount_fs("sysfs", source, &target.path(), o.flags, o.data().as_deref()).is_err() {
                bind(Path::new("/sys"), &target.path(), true)?;
                remount_bind(&target.reopen()?.path(), o.flags | MsFlags::MS_RDONLY)?;
            }
        }
        kind => mount_fs(kind, source, &target.path(), o.flags, o.data().as_deref())?,
    }
    if !o.propagation.is_empty() {
        propagation(&target.reopen()?.path(), o.propagation)?;
    }
    Ok(())
}

fn mount_bind(root: &Path, m: &MountPlan, o: &Options) -> Step {
    let source = Path::new(&m.source);
    let meta = std::fs::metadata(source).map_err(|e| {
        io_step(
            format!(
                "bind mount source {} (for {}) is not there",
                crate::sys::shown(source).display(),
                m.destination
            ),
            &e,
        )
    })?;
    let leaf = if meta.is_dir() { Leaf::Dir } else { Leaf::File };
    let target = secure_path::resolve(root, &m.destination, leaf)?;
    bind(source, &target.path(), o.recursive)?;
    // The descriptor reaches the directory beneath the new mount; the remount wants the mount.
    let mounted = target.reopen()?;
    let extra = o.flags & !(MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        remount_bind(&mounted.path(), extra)?;
    }
    if !o.propagation.is_empty() {
        propagation(&mounted.path(), o.propagation)?;
    }
    Ok(())
}

/// A `cgroup` mount: cgroup2 where the host has the unified hierarchy only, else a tmpfs with
/// each v1 hierarchy mounted under its name (and cgroup2 as `unified` on a hybrid host). Seen
/// from a cgroup namespace, each shows the container's own cgroup as its root.
fn mount_cgroup(place: &InRoot, o: &Options) -> Step {
    let ro = o.flags & MsFlags::MS_RDONLY;
    let flags = (o.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC) & !MsFlags::MS_RDONLY;
    let mounts = crate::cgroups::Mounts::read().unwrap_or_default();
    if mounts.layout() == crate::cgroups::Layout::V2 {
        return mount_fs("cgroup2", "cgroup", &place.path(), flags | ro, None);
    }
    mount_fs("tmpfs", "cgroup", &place.path(), flags, Some("mode=755"))?;
    // From here on the tmpfs just made: a fresh filesystem no symlink can be in.
    let mounted = place.reopen()?;
    let target = &mounted.path();
    let mut sub = Vec::new();
    for m in &mounts.v1 {
        let name = m
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        sub.push((name, "cgroup", Some(m.controllers.join(","))));
    }
    if mounts.v2.is_some() {
        sub.push(("unified".to_string(), "cgroup2", None));
    }
    for (name, fstype, data) in sub {
        let dir = target.join(&name);
        ctx(
            nix::unistd::mkdir(&dir, nix::sys::stat::Mode::from_bits_truncate(0o755)),
            || format!("creating {}", dir.display()),
        )?;
        mount_fs(fstype, "cgroup", &dir, flags | ro, data.as_deref())?;
    }
    if !ro.is_empty() {
        ctx(
            nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_REMOUNT | flags | ro,
                Some("mode=755"),
            ),
            || format!("making {} read-only", target.display()),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Options {
        parse_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data().as_deref(), Some("mode=755,size=65536k"));
        let o = opts(&["rbind", "ro", "rslave"]);
        assert!(o.bind && o.recursive);
        assert_eq!(o.flags, MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        let o = opts(&["ro", "rw", "nodev", "dev"]);
        assert!(o.flags.is_empty(), "later options win: {:?}", o.flags);
        assert_eq!(propagation_of("unbindable"), Some(MsFlags::MS_UNBINDABLE));
        assert_eq!(propagation_of("sideways"), None);
    }
}
