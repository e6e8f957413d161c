//! Which namespaces a container gets, new or joined, and the user-namespace id mappings.
//!
//! New namespaces are created by the `clone` that creates the container's first process, all
//! at once, so a new user namespace (created first by the kernel) owns the others. A new cgroup
//! namespace is the exception: the first process unshares it itself once the launcher has moved
//! it into its cgroup, so that cgroup becomes the namespace's root. Namespaces given by path are
//! joined with `setns`: the PID namespace by the launcher just before `clone` (a process cannot
//! change its own PID namespace, only its children's), the others by the first process, user
//! namespace first.

use crate::ContainerError;
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use sandbox_protocol::isolation::{IdMapping, Namespace, NamespaceKind};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};

/// The `CLONE_NEW*` flag of a namespace kind.
pub fn flag(kind: NamespaceKind) -> CloneFlags {
    match kind {
        NamespaceKind::Pid => CloneFlags::CLONE_NEWPID,
        NamespaceKind::Network => CloneFlags::CLONE_NEWNET,
        NamespaceKind::Mount => CloneFlags::CLONE_NEWNS,
        NamespaceKind::Ipc => CloneFlags::CLONE_NEWIPC,
        NamespaceKind::Uts => CloneFlags::CLONE_NEWUTS,
        NamespaceKind::User => CloneFlags::CLONE_NEWUSER,
        NamespaceKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        // CLONE_NEWTIME (0x80): applies to children of the process that unshares it.
        NamespaceKind::Time => CloneFlags::from_bits_retain(0x80),
    }
}

/// A namespace to join, opened in the launcher (before any privilege or mount change, so the
/// path resolves as the user gave it).
#[derive(Debug)]
pub struct Join {
    pub kind: NamespaceKind,
    pub path: String,
    pub fd: OwnedFd,
}

/// What the plan's namespaces come to.
#[derive(Debug)]
pub struct Prepared {
    /// New namespaces `clone` creates (the cgroup namespace is unshared later).
    pub clone: CloneFlags,
    /// Whether the first process unshares a new cgroup namespace.
    pub new_cgroup: bool,
    /// Namespaces joined by path, user namespace first.
    pub joins: Vec<Join>,
}

impl Prepared {
    /// Whether the container has a mount namespace of its own (new or joined): without one it
    /// must not mount anything, or the mounts would land in the host's namespace.
    pub fn has_mount_namespace(&self, plan: &[Namespace]) -> bool {
        plan.iter().any(|n| n.kind == NamespaceKind::Mount)
    }

    /// The joined PID namespace, which the launcher enters before `clone`.
    pub fn pid_join(&self) -> Option<&Join> {
        self.joins.iter().find(|j| j.kind == NamespaceKind::Pid)
    }
}

/// Checks and opens the plan's namespaces: a kind given twice, or a path that is not a
/// namespace of the kind it is given for, is refused naming it.
pub fn prepare(plan: &[Namespace]) -> Result<Prepared, ContainerError> {
    let mut prepared = Prepared {
        clone: CloneFlags::empty(),
        new_cgroup: false,
        joins: Vec::new(),
    };
    let mut seen = Vec::new();
    for ns in plan {
        if seen.contains(&ns.kind) {
            return Err(ContainerError::Namespace(format!(
                "the {} namespace is listed twice in linux.namespaces: keep one entry",
                ns.kind.proc_name()
            )));
        }
        seen.push(ns.kind);
        match ns.path.as_deref().filter(|p| !p.is_empty()) {
            None if ns.kind == NamespaceKind::Cgroup => prepared.new_cgroup = true,
            None => prepared.clone |= flag(ns.kind),
            Some(path) => prepared.joins.push(open_checked(ns.kind, path)?),
        }
    }
    prepared.joins.sort_by_key(|j| j.kind != NamespaceKind::User);
    Ok(prepared)
}

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`): the `CLONE_NEW*` flag of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

fn open_checked(kind: NamespaceKind, path: &str) -> Result<Join, ContainerError> {
    let bad = |why: String| {
        ContainerError::Namespace(format!("the {} namespace path {path}: {why}", kind.proc_name()))
    };
    let file = fs::File::open(path).map_err(|e| {
        bad(format!(
            "cannot open it ({e}): give /proc/PID/ns/... of a live process"
        ))
    })?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor's namespace.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if nstype < 0 {
        return Err(bad("it is not a namespace file (/proc/PID/ns/...)".into()));
    }
    let actual = CloneFlags::from_bits_retain(nstype);
    if actual != flag(kind) {
        let name = [
            NamespaceKind::Pid,
            NamespaceKind::Network,
            NamespaceKind::Mount,
            NamespaceKind::Ipc,
            NamespaceKind::Uts,
            NamespaceKind::User,
            NamespaceKind::Cgroup,
            NamespaceKind::Time,
        ]
        .into_iter()
        .find(|k| flag(*k) == actual)
        .map_or("unknown", |k| k.proc_name());
        return Err(bad(format!(
            "it is a {name} namespace, not a {} one",
            kind.proc_name()
        )));
    }
    Ok(Join {
        kind,
        path: path.to_string(),
        fd: file.into(),
    })
}

/// Enters namespace `join` (`setns`).
pub fn enter(join: &Join) -> nix::Result<()> {
    nix::sched::setns(&join.fd, flag(join.kind))
}

/// The inode number identifying namespace `name` of process `pid` (`"self"` for this one), as
/// `/proc/PID/ns/NAME` shows it (`net:[4026531840]`); `None` when it cannot be read.
pub fn inode(pid: &str, name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(format!("/proc/{pid}/ns/{name}"))
        .ok()
        .map(|m| m.ino())
}

/// Whether this launcher must use a user namespace (it is not root).
pub fn rootless() -> bool {
    !nix::unistd::geteuid().is_root()
}

fn read_number(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// For a non-root launcher: checks that this host lets it create a user namespace.
pub fn check_user_namespaces() -> Result<(), ContainerError> {
    let uid = nix::unistd::geteuid().as_raw();
    if read_number("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Err(ContainerError::NoUserNamespaces {
            uid,
            why: "user.max_user_namespaces is 0".into(),
        });
    }
    if read_number("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Err(ContainerError::NoUserNamespaces {
            uid,
            why: "kernel.unprivileged_userns_clone is 0".into(),
        });
    }
    if read_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return Err(ContainerError::NoUserNamespaces {
            uid,
            why: "AppArmor restricts unprivileged user namespaces \
                  (kernel.apparmor_restrict_unprivileged_userns=1)"
                .into(),
        });
    }
    Ok(())
}

/// The mappings to write for a new user namespace: the plan's, or for a rootless launcher
/// without any, root inside mapped to the launcher's own uid and gid (the only mapping an
/// unprivileged process may write).
pub fn mappings(uid: &[IdMapping], gid: &[IdMapping]) -> (Vec<IdMapping>, Vec<IdMapping>) {
    if !uid.is_empty() || !gid.is_empty() {
        return (uid.to_vec(), gid.to_vec());
    }
    let own = |id: u32| {
        vec![IdMapping {
            container_id: 0,
            host_id: id,
            size: 1,
        }]
    };
    (
        own(nix::unistd::geteuid().as_raw()),
        own(nix::unistd::getegid().as_raw()),
    )
}

/// Writes `child`'s uid and gid maps. A rootless launcher must deny `setgroups` first, as the
/// kernel requires for an unprivileged writer.
pub fn write_id_maps(child: Pid, uid: &[IdMapping], gid: &[IdMapping]) -> Result<(), ContainerError> {
    let write = |file: &str, content: String| {
        let path = format!("/proc/{child}/{file}");
        fs::write(&path, &content).map_err(|e| {
            ContainerError::Child(format!(
                "writing {path} ({}): {e}; the host refuses this user namespace mapping",
                content.trim().replace('\n', ", ")
            ))
        })
    };
    let lines = |maps: &[IdMapping]| {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
            .collect::<String>()
    };
    if rootless() {
        write("setgroups", "deny".to_string())?;
    }
    write("uid_map", lines(uid))?;
    write("gid_map", lines(gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(kind: NamespaceKind, path: Option<&str>) -> Namespace {
        Namespace {
            kind,
            path: path.map(str::to_string),
        }
    }

    #[test]
    fn new_namespaces_become_clone_flags_and_cgroup_is_unshared_later() {
        let p = prepare(&[
            ns(NamespaceKind::Pid, None),
            ns(NamespaceKind::Mount, None),
            ns(NamespaceKind::Cgroup, None),
        ])
        .unwrap();
        assert_eq!(p.clone, CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS);
        assert!(p.new_cgroup);
        assert!(p.joins.is_empty());
    }

    #[test]
    fn a_path_of_the_wrong_kind_or_a_duplicate_is_refused() {
        let err = prepare(&[ns(NamespaceKind::Network, Some("/proc/self/ns/ipc"))]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ipc namespace, not a net one"), "{msg}");
        let ok = prepare(&[ns(NamespaceKind::Ipc, Some("/proc/self/ns/ipc"))]).unwrap();
        assert_eq!(ok.joins.len(), 1);
        let pid = prepare(&[ns(NamespaceKind::Pid, Some("/proc/self/ns/pid_for_children"))]).unwrap();
        assert!(pid.pid_join().is_some());
        let err = prepare(&[ns(NamespaceKind::Uts, None), ns(NamespaceKind::Uts, None)]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let err = prepare(&[ns(NamespaceKind::Uts, Some("/etc/hostname"))]).unwrap_err();
        assert!(err.to_string().contains("not a namespace file"), "{err}");
    }
}
