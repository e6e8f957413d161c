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
    #[error("{what} {path} in the workload's root: {errno}")]
    Protect {
        path: String,
        what: String,
        errno: Errno,
    },
    #[error("cannot mount the copied host file at {destination}: {detail}")]
    CopiedFile { destination: String, detail: String },
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

/// The paths an OCI bundle hides and makes read-only (`linux.maskedPaths`,
/// `linux.readonlyPaths`), applied in the workload's root.
#[derive(Debug, Clone, Copy)]
pub struct ProtectedPaths<'a> {
    pub masked: &'a [String],
    pub read_only: &'a [String],
}

/// A VM: the API filesystems, then each volume from its block device (ext4); with a workload
/// root, its protected paths last.
pub fn setup_vm(
    volumes: &[VolumePlan],
    workload_root: Option<&WorkloadRoot>,
    protected: ProtectedPaths<'_>,
) -> Result<(), MountError> {
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
    if workload_root.is_some() {
        protect(Path::new(WORKLOAD_ROOT_MOUNT), protected)?;
    }
    Ok(())
}

/// Masks and write-protects paths under `root` as runc does: a masked directory gets an empty
/// read-only tmpfs, a masked file `/dev/null` bound over it; a read-only path is bound onto
/// itself and remounted read-only. Paths that do not exist are skipped.
fn protect(root: &Path, paths: ProtectedPaths<'_>) -> Result<(), MountError> {
    let failed = |path: &str, what: &str, errno: Errno| MountError::Protect {
        path: path.into(),
        what: what.to_string(),
        errno,
    };
    for path in paths.masked {
        let Ok(target) = resolve_in_root(root, path) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(&target) else {
            continue;
        };
        let result = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0,mode=0755"),
            )
        } else {
            mount(
                Some("/dev/null"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(|e| failed(path, "masking", e))?;
    }
    for path in paths.read_only {
        let Ok(target) = resolve_in_root(root, path) else {
            continue;
        };
        if std::fs::symlink_metadata(&target).is_err() {
            continue;
        }
        mount(
            Some(&target),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
                None::<&str>,
            )
        })
        .map_err(|e| failed(path, "making read-only", e))?;
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
    mount_copied_files(root)
}

/// Where init keeps the copied files it mounts into the workload's root.
const COPIED_FILES_DIR: &str = "/run/sandbox-files";

/// Mounts each file the host copied in (a bundle's bind mount of a host file) over its
/// destination in the workload's root, creating an empty one to mount on where it is missing
/// (a read-only root must have it). The destination is resolved inside the workload's root:
/// its symlinks lead no further out than that root, as runc resolves a bundle's mounts.
fn mount_copied_files(root: &WorkloadRoot) -> Result<(), MountError> {
    if root.files.is_empty() {
        return Ok(());
    }
    mount_point(COPIED_FILES_DIR)?;
    for (i, file) in root.files.iter().enumerate() {
        let failed = |detail: String| MountError::CopiedFile {
            destination: file.destination.clone(),
            detail,
        };
        let source = format!("{COPIED_FILES_DIR}/{i}");
        std::fs::write(&source, &file.contents)
            .and_then(|()| {
                std::fs::set_permissions(
                    &source,
                    std::os::unix::fs::PermissionsExt::from_mode(file.mode & 0o7777),
                )
            })
            .map_err(|e| failed(format!("cannot write its copy {source}: {e}")))?;
        let target = resolve_in_root(Path::new(WORKLOAD_ROOT_MOUNT), &file.destination).map_err(failed)?;
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Err(failed("it is a directory in the bundle's root".into())),
            Ok(_) => {}
            Err(_) if root.read_only => {
                return Err(failed(
                    "the bundle's root is read-only and has no file there to mount it on".into(),
                ))
            }
            Err(_) => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| failed(format!("cannot create {}: {e}", parent.display())))?;
                }
                std::fs::File::create(&target)
                    .map_err(|e| failed(format!("cannot create {}: {e}", target.display())))?;
            }
        }
        let bind = |flags: MsFlags| {
            mount(Some(source.as_str()), &target, None::<&str>, flags, None::<&str>).map_err(|errno| {
                MountError::Mount {
                    fstype: "bind".into(),
                    source_name: source.clone(),
                    target: target.display().to_string(),
                    errno,
                    hint: "",
                }
            })
        };
        bind(MsFlags::MS_BIND)?;
        if file.read_only {
            bind(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY)?;
        }
    }
    Ok(())
}

/// `path` (absolute) inside `root`, following symlinks as if `root` were `/`: an absolute
/// link restarts at `root`, `..` stops at it. The result need not exist.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<std::path::PathBuf, String> {
    const MAX_LINKS: usize = 40;
    let mut queue: std::collections::VecDeque<String> = path.split('/').map(str::to_string).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!(
                        "more than {MAX_LINKS} symbolic links on the way to {path}"
                    ));
                }
                let target = std::fs::read_link(&candidate)
                    .map_err(|e| format!("cannot read the link {}: {e}", candidate.display()))?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    resolved.clear();
                }
                for (i, c) in target.split('/').enumerate() {
                    queue.insert(i, c.to_string());
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(resolved.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
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

#[cfg(test)]
mod tests {
    use super::resolve_in_root;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_destination_resolves_inside_the_workload_root_whatever_its_links_say() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("run/systemd")).unwrap();
        // An image's /etc/resolv.conf as a relative link, and links that try to leave the root.
        symlink("../run/systemd/stub.conf", root.join("etc/resolv.conf")).unwrap();
        symlink("/etc/shadow", root.join("etc/hosts")).unwrap();
        symlink("../../../../../etc/passwd", root.join("etc/hostname")).unwrap();
        symlink("loop-b", root.join("etc/loop-a")).unwrap();
        symlink("loop-a", root.join("etc/loop-b")).unwrap();
        let r = |p: &str| resolve_in_root(root, p);
        assert_eq!(r("/etc/resolv.conf").unwrap(), root.join("run/systemd/stub.conf"));
        assert_eq!(r("/etc/hosts").unwrap(), root.join("etc/shadow"));
        assert_eq!(r("/etc/hostname").unwrap(), root.join("etc/passwd"));
        assert_eq!(r("/../../x/./y").unwrap(), root.join("x/y"));
        assert_eq!(r("/run/.containerenv").unwrap(), root.join("run/.containerenv"));
        assert!(r("/etc/loop-a").unwrap_err().contains("symbolic links"));
    }
}
