//! The API filesystems of the container (proc, read-only sysfs, /tmp, /run) and the OCI/runc
//! default protections on them: masked paths (hidden behind /dev/null or an empty read-only
//! tmpfs) and read-only paths. Runs in the container's first process, inside the new root.

use crate::sys::{bind, mkdir_all, mount_fs, remount_read_only, Step};
use nix::mount::MsFlags;
use std::path::Path;

/// Paths runc hides by default: kernel internals a container has no business reading.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths runc makes read-only by default: knobs that would change the host kernel.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const SAFE: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Mounts /proc (this PID namespace's), /sys read-only, and tmpfs on /tmp and /run (the guest
/// program expects both; it could not mount them itself once its capabilities are reduced).
pub fn api_filesystems() -> Step {
    mkdir_all("/proc")?;
    mount_fs("proc", "proc", "/proc", SAFE, None)?;
    mkdir_all("/sys")?;
    mount_fs("sysfs", "sysfs", "/sys", SAFE | MsFlags::MS_RDONLY, None)?;
    mkdir_all("/tmp")?;
    mount_fs(
        "tmpfs",
        "tmpfs",
        "/tmp",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mkdir_all("/run")?;
    mount_fs(
        "tmpfs",
        "tmpfs",
        "/run",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755"),
    )?;
    Ok(())
}

/// Applies [`MASKED_PATHS`] and [`READONLY_PATHS`]; paths this kernel lacks are skipped.
pub fn protect() -> Step {
    for path in MASKED_PATHS {
        let p = Path::new(path);
        if p.is_dir() {
            mount_fs("tmpfs", "tmpfs", path, MsFlags::MS_RDONLY, None)?;
        } else if p.exists() {
            bind(Path::new("/dev/null"), path, false)?;
        }
    }
    for path in READONLY_PATHS {
        if Path::new(path).exists() {
            bind(Path::new(path), path, true)?;
            remount_read_only(path, SAFE)?;
        }
    }
    Ok(())
}
