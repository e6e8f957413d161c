//! `/dev` as the OCI runtime spec lays it out: a small tmpfs with the standard character
//! devices, a private devpts instance with `ptmx`, `/dev/shm`, `/dev/mqueue`, and the usual
//! symlinks. Runs in the container's first process, inside the new root.
//!
//! As real root the device nodes are created with `mknod`; in a user namespace `mknod` is not
//! allowed, so the host's nodes are bind-mounted onto empty files instead (what rootless runc
//! does).

use crate::sys::{bind, ctx, mkdir_all, mount_fs, touch, Step};
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
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
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
];

/// Builds `/dev` in the new root. `host_dev` is the host's /dev as seen from here (under the
/// old root, still attached), used for bind mounts when `mknod` is not allowed.
pub fn setup(host_dev: &Path, rootless: bool) -> Step {
    let safe = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mkdir_all("/dev")?;
    mount_fs(
        "tmpfs",
        "tmpfs",
        "/dev",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in DEVICES {
        let path = format!("/dev/{name}");
        if rootless {
            touch(&path)?;
            bind(&host_dev.join(name), &path, false)?;
        } else {
            ctx(
                mknod(
                    path.as_str(),
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o666),
                    makedev(major, minor),
                ),
                || format!("creating device node {path}"),
            )?;
            // mknod applies the umask; the OCI default mode is 0666.
            ctx(
                nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    path.as_str(),
                    Mode::from_bits_truncate(0o666),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                ),
                || format!("setting the mode of {path}"),
            )?;
            sandbox_protocol::trace::note("mknod", || format!("{path} c {major}:{minor} mode 0666"));
        }
    }
    mkdir_all("/dev/pts")?;
    // A new devpts instance: the container sees only its own ptys.
    let pts_data = if rootless {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    mount_fs(
        "devpts",
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts_data),
    )?;
    mkdir_all("/dev/shm")?;
    mount_fs("tmpfs", "shm", "/dev/shm", safe, Some("mode=1777,size=65536k"))?;
    mkdir_all("/dev/mqueue")?;
    // mqueue belongs to the IPC namespace, which is the container's own.
    mount_fs("mqueue", "mqueue", "/dev/mqueue", safe, None)?;
    for (target, link) in SYMLINKS {
        ctx(nix::unistd::symlinkat(target, nix::fcntl::AT_FDCWD, link), || {
            format!("creating symlink {link}")
        })?;
    }
    Ok(())
}
