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
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmodat, fstatat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, unlinkat, UnlinkatFlags};
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

/// The symlinks in `/dev`: target, name.
const SYMLINKS: [(&str, &str); 5] = [
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
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
    let (dev, _) = secure_path::resolve_parent(root, "/dev/null")?;
    for (target, name) in SYMLINKS {
        if fstatat(dev.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            if name != "ptmx" {
                continue;
            }
            // A ptmx node (from an image) would bypass the container's own devpts.
            let _ = unlinkat(dev.fd(), name, UnlinkatFlags::NoRemoveDir);
        }
        ctx(symlinkat(target, dev.fd(), name), || {
            format!("creating symlink /dev/{name}")
        })?;
    }
    Ok(())
}

fn create(root: &Path, d: &DevicePlan, rootless: bool) -> Step {
    let kind = match d.kind {
        'b' => SFlag::S_IFBLK,
        'p' => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    if rootless && kind != SFlag::S_IFIFO {
        // The host's node, bind-mounted on an empty file.
        let place = secure_path::resolve(root, &d.path, Leaf::File)?;
        return bind(
            &Path::new("/dev").join(d.path.trim_start_matches("/dev/")),
            &place.path(),
            false,
        );
    }
    // Every call below acts on a name in the directory already opened inside the root, so an
    // image's symlink at the node's path is replaced, not followed.
    let (dir, name) = secure_path::resolve_parent(root, &d.path)?;
    let _ = unlinkat(dir.fd(), name.as_str(), UnlinkatFlags::NoRemoveDir);
    let mode = Mode::from_bits_truncate(d.file_mode.unwrap_or(0o666));
    ctx(
        mknodat(
            dir.fd(),
            name.as_str(),
            kind,
            mode,
            makedev(d.major.max(0) as u64, d.minor.max(0) as u64),
        ),
        || format!("creating device node {}", d.path),
    )?;
    // mknod applies the umask; the plan's mode is what the node gets.
    ctx(
        fchmodat(dir.fd(), name.as_str(), mode, FchmodatFlags::FollowSymlink),
        || format!("setting the mode of {}", d.path),
    )?;
    if d.uid.is_some() || d.gid.is_some() {
        ctx(
            fchownat(
                dir.fd(),
                name.as_str(),
                d.uid.map(nix::unistd::Uid::from_raw),
                d.gid.map(nix::unistd::Gid::from_raw),
                AtFlags::AT_SYMLINK_NOFOLLOW,
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
