//! The root overlay of a container whose root is an unprivileged host id (`sandbox run
//! --userns`, [`crate::RootSource::UserNamespaceOverlay`]).
//!
//! The image store and the run directory are root's own, mode 0700 at every level, and stay so:
//! the container's root (host uid BASE) cannot walk to its layers. So the first process opens
//! what the overlay is made of — the lower layers (copies whose owners are the namespace's
//! ids), the upper and work dirs (owned by BASE), the mount point — while it still has the
//! launcher's host uid 0, before it becomes the root of its user namespace ([`hold`]). As that
//! root it then builds the overlay from the descriptors with the new mount API (`fsopen`,
//! `fsconfig`, `fsmount`) and attaches it on the mount point with `move_mount` ([`mount`]).
//!
//! What this relies on (checked on Linux 6.18):
//! - the root of a user namespace that owns the mount namespace may mount overlayfs (Linux
//!   5.11+), with `userxattr`: `trusted.*` attributes are out of its reach, so opaque
//!   directories carry `user.overlay.opaque` (the shifted layers do) and whiteouts, 0/0
//!   character devices, work as they are;
//! - a layer given by descriptor (`FSCONFIG_SET_FD`, Linux 6.13+; older kernels get its
//!   `/proc/self/fd/N` path, through `lowerdir+` from 6.8, all layers in one `lowerdir`
//!   before) is not looked up through the host's directories, so the 0700 ones above it do not
//!   matter. The descriptor must be opened in the mount namespace the overlay is mounted in:
//!   the kernel refuses a layer on another namespace's mount (EINVAL), which is why the first
//!   process, not the launcher, opens them;
//! - the descriptor `fsmount` returns is the overlay's root: `/proc/self/fd/N` of it is the path
//!   the rest of the set-up takes for the new root. (After `mount(2)` onto `/proc/self/fd/M`,
//!   opening that path again reaches the directory beneath the mount, not the mount.)

use crate::rootfs::OverlayDirs;
use crate::sys::{ctx, Step, StepError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use sandbox_protocol::trace;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// The overlay's parts, opened while the host paths were still reachable.
#[derive(Debug)]
pub struct Held {
    /// Bottom first, as the image store lists them.
    lower: Vec<OwnedFd>,
    upper: OwnedFd,
    work: OwnedFd,
    /// The mount point.
    target: OwnedFd,
    /// The mount point's host path, for messages.
    target_path: PathBuf,
}

/// Opens (`O_PATH`) the overlay's directories and its mount point `target`. Call in the
/// container's mount namespace, before becoming the user namespace's root.
pub fn hold(dirs: &OverlayDirs, target: &Path) -> Step<Held> {
    let open = |path: &Path, what: &str| {
        ctx(
            nix::fcntl::open(
                path,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            ),
            || format!("opening the {what} {}", path.display()),
        )
    };
    let lower = dirs
        .lower
        .iter()
        .map(|l| open(l, "image layer"))
        .collect::<Step<Vec<_>>>()?;
    Ok(Held {
        lower,
        upper: open(&dirs.upper, "overlay upper dir")?,
        work: open(&dirs.work, "overlay work dir")?,
        target: open(target, "root mount point")?,
        target_path: target.to_path_buf(),
    })
}

/// Mounts the overlay of `held` on its mount point; returns a descriptor of the overlay's root
/// (keep it open while the root is set up).
pub fn mount(held: Held) -> Step<OwnedFd> {
    let began = trace::start();
    let fs = fsopen("overlay")?;
    let failed = |what: String, errno: Errno| StepError {
        what: format!("{what}{}", kernel_says(&fs)),
        errno,
    };
    set_lower(&fs, &held.lower).map_err(|(what, e)| failed(what, e))?;
    set_dir(&fs, "upperdir", &held.upper).map_err(|e| failed("giving overlayfs its upper dir".into(), e))?;
    set_dir(&fs, "workdir", &held.work).map_err(|e| failed("giving overlayfs its work dir".into(), e))?;
    set_flag(&fs, "userxattr").map_err(|e| failed("setting overlayfs's userxattr option".into(), e))?;
    create(&fs).map_err(|e| {
        failed(
            "creating the root overlay in the user namespace (overlayfs needs Linux 5.11+ there)".into(),
            e,
        )
    })?;
    let root = fsmount(&fs).map_err(|e| failed("mounting the root overlay".into(), e))?;
    move_mount(&root, &held.target).map_err(|e| StepError {
        what: format!("attaching the root overlay on {}", held.target_path.display()),
        errno: e,
    })?;
    trace::step("mount", began, || {
        format!(
            "overlay on {} from descriptors ({} layers), userxattr, flags nodev: mounted by the \
             user namespace's root (fsopen, fsmount, move_mount)",
            held.target_path.display(),
            held.lower.len()
        )
    });
    Ok(root)
}

fn cstring(s: &str) -> CString {
    // Only this file's own literal option names come here: none holds a NUL.
    CString::new(s).unwrap_or_default()
}

fn fsopen(fstype: &str) -> Step<OwnedFd> {
    let name = cstring(fstype);
    // SAFETY: fsopen reads the NUL-terminated name, alive for the call, and returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC) };
    let fd = ctx(Errno::result(fd), || {
        format!("opening a {fstype} filesystem context (fsopen needs Linux 5.2+)")
    })?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `fsconfig(cmd, key, value, aux)` on the context `fs`.
fn fsconfig(
    fs: &OwnedFd,
    cmd: libc::c_uint,
    key: Option<&CString>,
    value: Option<&CString>,
    aux: i32,
) -> Result<(), Errno> {
    let key = key.map_or(std::ptr::null(), |k| k.as_ptr());
    let value = value.map_or(std::ptr::null(), |v| v.as_ptr());
    // SAFETY: `key` and `value` are null or NUL-terminated strings alive for the call; the
    // kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key, value, aux) };
    Errno::result(rc).map(drop)
}

/// Gives the directory `dir` as option `key`: by descriptor, or on kernels that take no
/// descriptor for it, as its `/proc/self/fd/N` path.
fn set_dir(fs: &OwnedFd, key: &str, dir: &OwnedFd) -> Result<(), Errno> {
    let k = cstring(key);
    match fsconfig(fs, libc::FSCONFIG_SET_FD, Some(&k), None, dir.as_raw_fd()) {
        Err(Errno::EINVAL) => {
            let path = cstring(&format!("/proc/self/fd/{}", dir.as_raw_fd()));
            fsconfig(fs, libc::FSCONFIG_SET_STRING, Some(&k), Some(&path), 0)
        }
        other => other,
    }
}

/// The most bytes `fsconfig` takes in one string value (it refuses 256 and more).
const MAX_STRING: usize = 255;

/// Gives the lower layers (bottom first), the topmost first as overlayfs wants: one
/// `lowerdir+` each, or on kernels before 6.8, which lack it, all in one `lowerdir` of
/// `/proc/self/fd/N` paths (as many as fit in one `fsconfig` string).
fn set_lower(fs: &OwnedFd, lower: &[OwnedFd]) -> Result<(), (String, Errno)> {
    let mut top_first = lower.iter().rev();
    let Some(top) = top_first.next() else {
        return Err(("the image has no layers".into(), Errno::EINVAL));
    };
    match set_dir(fs, "lowerdir+", top) {
        Ok(()) => {}
        Err(Errno::EINVAL) => {
            let list: Vec<String> = lower
                .iter()
                .rev()
                .map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .collect();
            let list = list.join(":");
            if list.len() > MAX_STRING {
                return Err((
                    format!(
                        "giving overlayfs the image's {} layers: this kernel lacks `lowerdir+` \
                         (Linux 6.8) and takes only a few layers in one option; flatten the image \
                         or run it without --userns",
                        lower.len()
                    ),
                    Errno::E2BIG,
                ));
            }
            return fsconfig(
                fs,
                libc::FSCONFIG_SET_STRING,
                Some(&cstring("lowerdir")),
                Some(&cstring(&list)),
                0,
            )
            .map_err(|e| ("giving overlayfs the image's layers".into(), e));
        }
        Err(e) => return Err((format!("giving overlayfs image layer {}", lower.len()), e)),
    }
    for (i, layer) in top_first.enumerate() {
        let number = lower.len() - 1 - i;
        set_dir(fs, "lowerdir+", layer).map_err(|e| (format!("giving overlayfs image layer {number}"), e))?;
    }
    Ok(())
}

fn set_flag(fs: &OwnedFd, key: &str) -> Result<(), Errno> {
    fsconfig(fs, libc::FSCONFIG_SET_FLAG, Some(&cstring(key)), None, 0)
}

fn create(fs: &OwnedFd) -> Result<(), Errno> {
    fsconfig(fs, libc::FSCONFIG_CMD_CREATE, None, None, 0)
}

/// The new superblock as a detached mount: device nodes on it cannot be opened.
fn fsmount(fs: &OwnedFd) -> Result<OwnedFd, Errno> {
    // SAFETY: fsmount takes the context descriptor and two flag words, and returns a new
    // descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            libc::MOUNT_ATTR_NODEV,
        )
    };
    let fd = Errno::result(fd)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches the detached mount `mount` on the directory `target`.
fn move_mount(mount: &OwnedFd, target: &OwnedFd) -> Result<(), Errno> {
    let empty = cstring("");
    // SAFETY: both paths are the empty NUL-terminated string, alive for the call: the
    // descriptors themselves are the source and target (the EMPTY_PATH flags).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(rc).map(drop)
}

/// What the kernel logged on the context `fs` (`e overlayfs: ...` lines), as `: kernel says
/// ...`; empty when it said nothing.
fn kernel_says(fs: &OwnedFd) -> String {
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    // Each read returns one message; an empty log answers ENODATA.
    while let Ok(n) = nix::unistd::read(fs, &mut buf) {
        if n == 0 || said.len() >= 8 {
            break;
        }
        said.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
    }
    if said.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {})", said.join("; "))
    }
}
