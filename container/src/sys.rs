//! Small wrappers over the mount-related kernel calls the container's first process makes, so
//! every failure carries what was being done (the child reports it through its status pipe).

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
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

/// Adds context to an errno.
pub fn ctx<T>(result: Result<T, Errno>, what: impl FnOnce() -> String) -> Step<T> {
    result.map_err(|errno| StepError { what: what(), errno })
}

/// `mount(2)` of a filesystem (`fstype` with `source`) on `target`.
pub fn mount_fs(fstype: &str, source: &str, target: &str, flags: MsFlags, data: Option<&str>) -> Step {
    let began = trace::start();
    ctx(mount(Some(source), target, Some(fstype), flags, data), || {
        format!("mounting {fstype} on {target}")
    })?;
    trace::step("mount", began, || {
        format!(
            "{source} on {target} type {fstype} flags {} data {}",
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
pub fn bind(source: &Path, target: &str, recursive: bool) -> Step {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    let began = trace::start();
    ctx(
        mount(Some(source), target, None::<&str>, flags, None::<&str>),
        || format!("bind-mounting {} on {target}", source.display()),
    )?;
    trace::step("mount", began, || {
        format!("{} on {target} flags {}", source.display(), flag_names(flags))
    });
    Ok(())
}

/// Makes the bind mount at `target` read-only, keeping `keep` flags (the kernel refuses a
/// remount that would clear nosuid/nodev/noexec where they are locked).
pub fn remount_read_only(target: &str, keep: MsFlags) -> Step {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep;
    let began = trace::start();
    ctx(
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>),
        || format!("making {target} read-only"),
    )?;
    trace::step("mount", began, || format!("{target} flags {}", flag_names(flags)));
    Ok(())
}

/// Changes the propagation of the mount at `target` (and below it, with MS_REC).
pub fn propagation(target: &str, flags: MsFlags) -> Step {
    let began = trace::start();
    ctx(
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>),
        || format!("changing mount propagation of {target}"),
    )?;
    trace::step("mount.propagation", began, || {
        format!("{target} flags {}", flag_names(flags))
    });
    Ok(())
}

/// Lazily detaches the mount at `target`.
pub fn detach(target: &str) -> Step {
    let began = trace::start();
    ctx(umount2(target, MntFlags::MNT_DETACH), || {
        format!("detaching {target}")
    })?;
    trace::step("umount", began, || format!("{target} (MNT_DETACH)"));
    Ok(())
}

/// Creates directory `path` and its parents (mode 0755); an existing one is fine.
pub fn mkdir_all(path: &str) -> Step {
    std::fs::create_dir_all(path).map_err(|e| StepError {
        what: format!("creating directory {path}"),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })
}

/// Creates an empty file at `path` (a mount point for a bind-mounted file).
pub fn touch(path: &str) -> Step {
    ctx(
        nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop),
        || format!("creating {path}"),
    )
}
