//! Masked and read-only paths (OCI `maskedPaths`, `readonlyPaths`; runc's defaults for
//! `sandbox run`): kernel internals hidden behind an empty read-only tmpfs (a directory) or
//! `/dev/null` (anything else), and host knobs made read-only. Runs in the container's first
//! process after `pivot_root`, so every path resolves inside the container; a path the kernel
//! or image lacks is skipped.

use crate::sys::{bind, mount_fs, remount_bind, Step};
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

/// Hides each of `paths`.
pub fn mask(paths: &[String]) -> Step {
    for path in paths {
        let p = Path::new(path);
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => mount_fs("tmpfs", "tmpfs", p, MsFlags::MS_RDONLY, None)?,
            Ok(_) => bind(Path::new("/dev/null"), p, false)?,
            Err(_) => continue,
        }
    }
    Ok(())
}

/// Makes each of `paths` read-only (a bind mount of itself, remounted read-only).
pub fn read_only(paths: &[String]) -> Step {
    for path in paths {
        let p = Path::new(path);
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        bind(p, p, true)?;
        remount_bind(
            p,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}
