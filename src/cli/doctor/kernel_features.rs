//! Host kernel features the container mode and networking use: overlayfs and /dev/net/tun.

use super::report::{Check, Needed};
use serde_json::json;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

pub fn overlay_check() -> Check {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let listed = filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"));
    if listed {
        return Check::ok("overlayfs", Needed::Container, "overlay is in /proc/filesystems")
            .with_data(json!({ "state": "loaded" }));
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = Path::new("/lib/modules")
        .join(&release)
        .join("kernel/fs/overlayfs");
    let loadable = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("overlay.ko"))
        })
        .unwrap_or(false);
    if loadable {
        Check::ok(
            "overlayfs",
            Needed::Container,
            format!("overlay is loadable (module in {})", dir.display()),
        )
        .with_data(json!({ "state": "loadable" }))
    } else {
        Check::fail(
            "overlayfs",
            Needed::Container,
            "overlay is neither in /proc/filesystems nor a loadable module",
            "use a kernel with CONFIG_OVERLAY_FS (or install its modules package and `modprobe overlay`)",
        )
        .with_data(json!({ "state": "missing" }))
    }
}

pub fn tun_check() -> Check {
    let path = Path::new("/dev/net/tun");
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_char_device() => {
            Check::ok("tun", Needed::Both, "/dev/net/tun is present").with_data(json!({ "present": true }))
        }
        Ok(_) => Check::warn(
            "tun",
            Needed::Both,
            "/dev/net/tun exists but is not a character device",
            "recreate it: `mknod /dev/net/tun c 10 200`",
        )
        .with_data(json!({ "present": false })),
        Err(_) => Check::warn(
            "tun",
            Needed::Both,
            "/dev/net/tun is missing: networking (--net) will not work",
            "`modprobe tun`, or `mkdir -p /dev/net && mknod /dev/net/tun c 10 200`",
        )
        .with_data(json!({ "present": false })),
    }
}
