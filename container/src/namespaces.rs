//! Which namespaces a container gets, in which order, and the user-namespace set-up for
//! rootless runs.
//!
//! Order: the `clone` that creates the container's first process creates the user namespace
//! (rootless only) first — the kernel always does, so the others are owned by it — then PID,
//! mount, UTS, IPC and network. The cgroup namespace comes last, unshared by the child itself
//! once the launcher has moved it into its cgroup, so that cgroup becomes the namespace's root.

use crate::ContainerError;
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::fs;

/// The namespaces created with the container's first process, in the order described above.
pub fn clone_flags(rootless: bool) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    if rootless {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    flags
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
}

/// The namespaces `clone` creates (see [`clone_flags`]), by their name under `/proc/PID/ns/`.
pub fn cloned_names(rootless: bool) -> Vec<&'static str> {
    let mut names = Vec::new();
    if rootless {
        names.push("user");
    }
    names.extend(["pid", "mnt", "uts", "ipc", "net"]);
    names
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

/// Maps root in the child's user namespace to the launcher's own uid and gid (the only mapping
/// an unprivileged process may write), after denying `setgroups` as the kernel requires.
pub fn write_id_maps(child: Pid, uid: u32, gid: u32) -> Result<(), ContainerError> {
    let write = |file: &str, content: String| {
        let path = format!("/proc/{child}/{file}");
        fs::write(&path, content).map_err(|e| {
            ContainerError::Child(format!(
                "writing {path}: {e}; the host refuses the user namespace mapping for uid {uid}"
            ))
        })
    };
    write("setgroups", "deny".to_string())?;
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))
}
