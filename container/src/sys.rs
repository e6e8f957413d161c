//! Small wrappers over the mount-related kernel calls the container's first process makes, so
//! every failure carries what was being done (the child reports it through its status pipe).

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use sandbox_protocol::trace;
use std::path::Path;

/// A failed step in the child: what it was doing and the errno.
#[derive(Debug)]
pub struct StepError {
    pub what: String,
    pub errno: Errno,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.errno.desc())
    }
}

pub type Step<T = ()> = Result<T, StepError>;

/// A path as messages and traces show it: a `/proc/self/fd/N` path (a target resolved inside
/// the container's root, see [`crate::secure_path`]) as the path its descriptor reaches.
pub fn shown(path: &Path) -> std::path::PathBuf {
    if path.starts_with("/proc/self/fd") {
        if let Ok(real) = std::fs::read_link(path) {
            return real;
        }
    }
    path.to_path_buf()
}

/// Adds context to an errno.
pub fn ctx<T>(result: Result<T, Errno>, what: impl FnOnce() -> String) -> Step<T> {
    result.map_err(|errno| StepError { what: what(), errno })
}

/// `mount(2)` of a filesystem (`fstype` with `source`) on `target`.
pub fn mount_fs(fstype: &str, source: &str, target: &Path, flags: MsFlags, data: Option<&str>) -> Step {
    let began = trace::start();
    ctx(mount(Some(source), target, Some(fstype), flags, data), || {
        format!("mounting {fstype} on {}", shown(target).display())
    })?;
    trace::step("mount", began, || {
        format!(
            "{source} on {} type {fstype} flags {} data {}",
            shown(target).display(),
            flag_names(flags),
            data.unwrap_or("-")
        )
    });
    Ok(())
}

/// `MS_*` flags as names (`nosuid,nodev,...`), for the trace.
fn flag_names(flags: MsFlags) -> String {
    let names = [
        (MsFlags::MS_RDONLY, "ro"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_STRICTATIME, "strictatime"),
        (MsFlags::MS_REMOUNT, "remount"),
        (MsFlags::MS_BIND, "bind"),
        (MsFlags::MS_REC, "rec"),
        (MsFlags::MS_PRIVATE, "private"),
        (MsFlags::MS_SHARED, "shared"),
        (MsFlags::MS_SLAVE, "slave"),
        (MsFlags::MS_UNBINDABLE, "unbindable"),
        (MsFlags::MS_NOATIME, "noatime"),
        (MsFlags::MS_RELATIME, "relatime"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join(",")
    }
}

/// A (recursive) bind mount of `source` on `target`.
pub fn bind(source: &Path, target: &Path, recursive: bool) -> Step {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    let began = trace::start();
    ctx(
        mount(Some(source), target, None::<&str>, flags, None::<&str>),
        || {
            format!(
                "bind-mounting {} on {}",
                shown(source).display(),
                shown(target).display()
            )
        },
    )?;
    trace::step("mount", began, || {
        format!(
            "{} on {} flags {}",
            shown(source).display(),
            shown(target).display(),
            flag_names(flags)
        )
    });
    Ok(())
}

/// Remounts the bind mount at `target` with `flags` (plus MS_BIND|MS_REMOUNT), keeping the
/// flags the kernel has locked on it (a mount made in a user namespace from a nosuid, nodev or
/// noexec one must keep them, or the remount is refused).
pub fn remount_bind(target: &Path, flags: MsFlags) -> Step {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked_flags(target);
    let began = trace::start();
    ctx(
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>),
        || format!("remounting {} ({})", shown(target).display(), flag_names(flags)),
    )?;
    trace::step("mount", began, || {
        format!("{} flags {}", shown(target).display(), flag_names(flags))
    });
    Ok(())
}

/// Makes the bind mount at `target` read-only.
pub fn remount_read_only(target: &Path) -> Step {
    remount_bind(target, MsFlags::MS_RDONLY)
}

/// The nosuid/nodev/noexec/noatime-class flags the mount at `path` has now.
pub fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (have, want) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(have) {
            out |= want;
        }
    }
    out
}

/// Changes the propagation of the mount at `target` (and below it, with MS_REC).
pub fn propagation(target: &Path, flags: MsFlags) -> Step {
    let began = trace::start();
    ctx(
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>),
        || format!("changing mount propagation of {}", shown(target).display()),
    )?;
    trace::step("mount.propagation", began, || {
        format!("{} flags {}", shown(target).display(), flag_names(flags))
    });
    Ok(())
}

/// Lazily detaches the mount at `target`.
pub fn detach(target: &Path) -> Step {
    let began = trace::start();
    ctx(umount2(target, MntFlags::MNT_DETACH), || {
        format!("detaching {}", shown(target).display())
    })?;
    trace::step("umount", began, || {
        format!("{} (MNT_DETACH)", shown(target).display())
    });
    Ok(())
}

/// A failed I/O call in the child, as a step error.
pub fn io_step(what: impl Into<String>, e: &std::io::Error) -> StepError {
    StepError {
        what: what.into(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}
