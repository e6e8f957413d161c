//! The filesystems init mounts: the API filesystems a VM's kernel leaves to user space, the
//! volumes (block devices in a VM), and the few a container launcher may have left out.

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use sandbox_protocol::mountinfo;
use sandbox_protocol::{VolumePlan, WorkloadRoot, WORKLOAD_ROOT_MOUNT};
use std::io;
use std::path::Path;

/// Why a mount did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create the mount point {target}: {source}")]
    MountPoint { target: String, source: io::Error },
    #[error("cannot mount {fstype} {source_name} on {target}: {errno}{hint}")]
    Mount {
        fstype: String,
        source_name: String,
        target: String,
        errno: Errno,
        hint: &'static str,
    },
}

/// One filesystem to mount.
struct Fs {
    fstype: &'static str,
    source: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: &'static str,
    /// Whether init fails without it (optional ones are skipped when the kernel lacks them).
    required: bool,
}

const SAFE: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

fn fs(
    fstype: &'static str,
    source: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: &'static str,
) -> Fs {
    Fs {
        fstype,
        source,
        target,
        flags,
        data,
        required: true,
    }
}

/// What a VM's init mounts, in order.
fn vm_filesystems() -> [Fs; 7] {
    [
        fs("proc", "proc", "/proc", SAFE.union(MsFlags::MS_NOEXEC), ""),
        fs("sysfs", "sysfs", "/sys", SAFE.union(MsFlags::MS_NOEXEC), ""),
        fs("devtmpfs", "devtmpfs", "/dev", MsFlags::MS_NOSUID, "mode=0755"),
        Fs {
            required: false,
            ..fs(
                "devpts",
                "devpts",
                "/dev/pts",
                MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
                "gid=5,mode=620,ptmxmode=666",
            )
        },
        Fs {
            required: false,
            ..fs("tmpfs", "shm", "/dev/shm", SAFE, "mode=1777")
        },
        fs("tmpfs", "tmpfs", "/tmp", SAFE, "mode=1777"),
        fs("tmpfs", "tmpfs", "/run", SAFE, "mode=0755"),
    ]
}

/// What a container's init adds when the launcher did not mount it.
fn container_filesystems() -> [Fs; 2] {
    [
        fs("tmpfs", "tmpfs", "/tmp", SAFE, "mode=1777"),
        fs("tmpfs", "tmpfs", "/run", SAFE, "mode=0755"),
    ]
}

/// Whether something is mounted exactly at `target` (needs /proc; /proc itself is checked by
/// its content).
pub fn is_mounted(target: &str) -> bool {
    if target == "/proc" {
        return Path::new("/proc/self/mountinfo").exists();
    }
    mountinfo::current().is_some_and(|mounts| mounts.iter().any(|m| m.target == target))
}

/// Creates `target` (and its parents) when missing.
fn mount_point(target: &str) -> Result<(), MountError> {
    if Path::new(target).is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|source| MountError::MountPoint {
        target: target.into(),
        source,
    })
}

/// Mounts `source` (of type `fstype`) on `target`, creating the mount point.
pub fn mount_fs(
    fstype: &str,
    source: &str,
    target: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), MountError> {
    mount_point(target)?;
    let data = (!data.is_empty()).then_some(data);
    mount(Some(source), target, Some(fstype), flags, data).map_err(|errno| MountError::Mount {
        fstype: fstype.into(),
        source_name: source.into(),
        target: target.into(),
        errno,
        hint: match errno {
            Errno::ENODEV => " (the kernel lacks this filesystem: enable it in the guest kernel config)",
            Errno::ENOENT | Errno::ENXIO => " (no such device: is the disk attached?)",
            Errno::EPERM => " (init needs CAP_SYS_ADMIN)",
            _ => "",
        },
    })
}

fn mount_missing(list: &[Fs], tolerant: bool) -> Result<(), MountError> {
    for f in list {
        if is_mounted(f.target) {
            continue;
        }
        match mount_fs(f.fstype, f.source, f.target, f.flags, f.data) {
            Ok(()) => {}
            Err(MountError::Mount {
                errno: Errno::EBUSY, ..
            }) => {}
            Err(MountError::Mount {
                errno: Errno::ENODEV, ..
            }) if !f.required => {}
            Err(e) if tolerant || !f.required => eprintln!("sandbox-guest init: warning: {e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Mounts /proc if it is not there yet (a VM's init needs it to read the kernel command line).
pub fn ensure_proc() -> Result<(), MountError> {
    mount_missing(&vm_filesystems()[..1], false)
}

/// Mounts devtmpfs on /dev if it is not there yet (a VM's init needs it to open the plan
/// device); without /proc the check is skipped and EBUSY tolerated.
pub fn ensure_dev() -> Result<(), MountError> {
    mount_missing(&vm_filesystems()[2..3], false)
}

/// A VM: the API filesystems, then each volume from its block device (ext4).
pub fn setup_vm(volumes: &[VolumePlan], workload_root: Option<&WorkloadRoot>) -> Result<(), MountError> {
    mount_missing(&vm_filesystems(), false)?;
    // With a root of its own, the workload's view is built under it: /proc, /sys and /dev
    // from init's, and the volumes at their targets inside it.
    let base = match workload_root {
        Some(root) => {
            mount_workload_root(root)?;
            WORKLOAD_ROOT_MOUNT
        }
        None => "",
    };
    for v in volumes {
        let mut flags = MsFlags::empty();
        if v.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mount_fs("ext4", &v.source, &format!("{base}{}", v.target), flags, "")?;
    }
    Ok(())
}

/// Mounts the workload's root disk and binds init's /proc, /sys and /dev (with its ptys) into
/// it. A read-only root without a mount point for one of them goes without it.
fn mount_workload_root(root: &WorkloadRoot) -> Result<(), MountError> {
    let mut flags = MsFlags::MS_NODEV;
    if root.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount_fs("ext4", &root.device, WORKLOAD_ROOT_MOUNT, flags, "")?;
    for dir in ["/proc", "/sys", "/dev"] {
        let target = format!("{WORKLOAD_ROOT_MOUNT}{dir}");
        if !Path::new(&target).is_dir() && root.read_only {
            continue;
        }
        mount_point(&target)?;
        mount(
            Some(dir),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|errno| MountError::Mount {
            fstype: "bind".into(),
            source_name: dir.into(),
            target: target.clone(),
            errno,
            hint: "",
        })?;
    }
    Ok(())
}

/// A container: /tmp and /run where the launcher left them out; failures are warnings (the
/// launcher owns the rest of the filesystem).
pub fn setup_container() {
    let _ = mount_missing(&container_filesystems(), true);
}

/// Whether descriptor `fd` is closed, or open on /dev/null (what Rust's runtime puts on a
/// closed 0-2 at start-up).
fn fd_is_missing_or_null(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries a descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return true;
    }
    std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|target| target == Path::new("/dev/null"))
}

/// Points descriptors 0, 1 and 2 at /dev/console where they are closed or on /dev/null, so the
/// workload's output reaches the VM's console even when the root disk had no /dev/console for
/// the kernel to open before init started.
pub fn ensure_console_fds() {
    let wanted: Vec<i32> = (0..3).filter(|&fd| fd_is_missing_or_null(fd)).collect();
    if wanted.is_empty() {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&console);
    let mut keep = false;
    for fd in wanted {
        if fd == raw {
            keep = true;
        } else {
            // SAFETY: dup2 makes `fd` (closed, or on /dev/null) a copy of the console
            // descriptor; no memory is involved.
            unsafe { libc::dup2(raw, fd) };
        }
    }
    if keep {
        // The console landed on one of 0-2 itself: leave it open there.
        let _ = std::os::fd::IntoRawFd::into_raw_fd(console);
    }
}
