//! `/dev` as the OCI runtime spec lays it out: the standard character devices, the plan's own
//! device nodes, `/dev/ptmx` pointing into the private devpts instance, and the usual symlinks.
//! Runs in the container's first process before `pivot_root`, after the plan's mounts (so /dev
//! is the container's own tmpfs), with every path resolved inside the new root.
//!
//! As real root the nodes are created with `mknod`; in a user namespace `mknod` is not allowed,
//! so the host's nodes are bind-mounted onto empty files instead (what rootless runc does). A
//! node that exists is no permission to use it: the cgroup's device allowlist decides what may
//! be opened ([`crate::cgroups::devices`]).

use crate::secure_path::{self, Leaf};
use crate::sys::{bind, ctx, Step};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use sandbox_protocol::isolation::DevicePlan;
use std::path::Path;

/// The character devices every container gets: name, major, minor.
pub const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const SYMLINKS: [(&str, &str); 5] = [
    ("/proc/self/fd", "dev/fd"),
    ("/proc/self/fd/0", "dev/stdin"),
    ("/proc/self/fd/1", "dev/stdout"),
    ("/proc/self/fd/2", "dev/stderr"),
    ("pts/ptmx", "dev/ptmx"),
];

/// Creates the standard nodes, the plan's `devices` and the symlinks under `root/dev`.
pub fn setup(root: &Path, devices: &[DevicePlan], rootless: bool) -> Step {
    let standard = DEVICES.iter().map(|&(name, major, minor)| DevicePlan {
        path: format!("/dev/{name}"),
        kind: 'c',
        major: major as i64,
        minor: minor as i64,
        file_mode: Some(0o666),
        uid: Some(0),
        gid: Some(0),
    });
    for device in standard.chain(devices.iter().cloned()) {
        create(root, &device, rootless)?;
    }
    for (target, link) in SYMLINKS {
        let path = root.join(link);
        if std::fs::symlink_metadata(&path).is_ok() {
            if link != "dev/ptmx" {
                continue;
            }
            // A ptmx node (from an image) would bypass the container's own devpts.
            let _ = std::fs::remove_file(&path);
        }
        ctx(
            nix::unistd::symlinkat(target, nix::fcntl::AT_FDCWD, &path),
            || format!("creating symlink /{link}"),
        )?;
    }
    Ok(())
}

fn create(root: &Path, d: &DevicePlan, rootless: bool) -> Step {
    let path = secure_path::resolve(root, &d.path, Leaf::File)?;
    let kind = match d.kind {
        'b' => SFlag::S_IFBLK,
        'p' => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    if rootless && kind != SFlag::S_IFIFO {
        // The empty file resolve() left is the mount point for the host's node.
        return bind(
            &Path::new("/dev").join(d.path.trim_start_matches("/dev/")),
            &path,
            false,
        );
    }
    let _ = std::fs::remove_file(&path);
    let mode = Mode::from_bits_truncate(d.file_mode.unwrap_or(0o666));
    ctx(
        mknod(
            &path,
            kind,
            mode,
            makedev(d.major.max(0) as u64, d.minor.max(0) as u64),
        ),
        || format!("creating device node {}", d.path),
    )?;
    // mknod applies the umask; the plan's mode is what the node gets.
    ctx(
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &path,
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        ),
        || format!("setting the mode of {}", d.path),
    )?;
    if d.uid.is_some() || d.gid.is_some() {
        ctx(
            nix::unistd::chown(
                &path,
                d.uid.map(nix::unistd::Uid::from_raw),
                d.gid.map(nix::unistd::Gid::from_raw),
            ),
            || format!("setting the owner of {}", d.path),
        )?;
    }
    sandbox_protocol::trace::note("mknod", || {
        format!(
            "{} {} {}:{} mode {:04o}",
            d.path,
            d.kind,
            d.major,
            d.minor,
            mode.bits()
        )
    });
    Ok(())
}
