//! Resolving a path inside the container's root without leaving it.
//!
//! An image (or an OCI bundle) is untrusted input: a symlink in it such as `data -> /etc`,
//! `data -> /.sandbox-oldroot/host/dir` or `data -> ../../..` must not turn a mount destination
//! into a host path, and must not make the launcher create directories on the host.
//!
//! [`resolve`] walks the path one component at a time from a descriptor of the root, never by
//! host path: each directory on the way is opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)`, symlinks are read with `readlinkat` and their targets resolved against
//! the container's root (an absolute target restarts at the root, `..` never climbs above it) as
//! the kernel will once the root is the container's, and missing directories are made with
//! `mkdirat` in the directory already opened. What it returns is an `O_PATH` descriptor of the
//! result ([`InRoot`]); mounts go onto `/proc/self/fd/N`, so a symlink swapped in after the check
//! cannot redirect them.

use crate::sys::StepError;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// How many symlinks one resolution may follow (the kernel's limit too).
const MAX_LINKS: usize = 40;

/// What to create when the last component is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// Nothing: the path must exist.
    Existing,
    /// A directory (a mount point for a directory).
    Dir,
    /// An empty file (a mount point for a file or device).
    File,
}

/// A path resolved inside a root: an `O_PATH` descriptor of it, and where it is.
#[derive(Debug)]
pub struct InRoot {
    root: OwnedFd,
    root_path: PathBuf,
    /// The path below the root, every symlink resolved (empty for the root itself).
    relative: PathBuf,
    fd: OwnedFd,
}

impl InRoot {
    /// The path to hand to the kernel (`/proc/self/fd/N`): it reaches exactly the inode that
    /// was resolved, whatever the tree looks like now.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The descriptor itself.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Where it is on the host, for messages.
    pub fn host(&self) -> PathBuf {
        self.root_path.join(&self.relative)
    }

    /// The same path opened again: after a mount on it, the descriptor reaches the mount's root
    /// instead of the directory beneath.
    pub fn reopen(&self) -> Result<InRoot, StepError> {
        let fd = open_in(&self.root, &self.relative, OFlag::empty()).map_err(|errno| StepError {
            what: format!("opening {} again", self.host().display()),
            errno,
        })?;
        Ok(InRoot {
            root: self
                .root
                .try_clone()
                .map_err(|e| io_error("duplicating the root's descriptor", &e))?,
            root_path: self.root_path.clone(),
            relative: self.relative.clone(),
            fd,
        })
    }
}

fn io_error(what: &str, e: &std::io::Error) -> StepError {
    StepError {
        what: what.to_string(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Opens `relative` below `root` as `O_PATH` (plus `extra`), inside the root and through no
/// symlink at all.
fn open_in(root: &OwnedFd, relative: &Path, extra: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | extra)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let path: &Path = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    openat2(root.as_fd(), path, how)
}

/// Resolves `path` (as the container will see it) inside `root`, creating missing directories
/// on the way and the last component as `leaf` says.
pub fn resolve(root: &Path, path: &str, leaf: Leaf) -> Result<InRoot, StepError> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| StepError {
        what: format!("opening the container's root {}", root.display()),
        errno,
    })?;
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    let fail = |what: String, errno: Errno| StepError { what, errno };
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let last = pending.is_empty();
        let parent = open_in(&root_fd, &relative(&resolved), OFlag::O_DIRECTORY).map_err(|errno| {
            fail(
                format!(
                    "resolving {path} inside the container: /{} is not a directory",
                    resolved.join("/")
                ),
                errno,
            )
        })?;
        match fstatat(&parent, name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(fail(
                        format!("resolving {path} inside the container: too many symlinks"),
                        Errno::ELOOP,
                    ));
                }
                let target = nix::fcntl::readlinkat(&parent, name.as_str()).map_err(|errno| {
                    fail(
                        format!("reading the symlink /{}/{name}", resolved.join("/")),
                        errno,
                    )
                })?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            Ok(_) => resolved.push(name),
            Err(Errno::ENOENT) => {
                create(&parent, &name, if last { leaf } else { Leaf::Dir }).map_err(|errno| {
                    let what = match (errno, last) {
                        (Errno::ENOENT, true) => format!("{path} does not exist inside the container"),
                        _ => format!("creating {path} inside the container"),
                    };
                    fail(what, errno)
                })?;
                resolved.push(name);
            }
            Err(errno) => {
                return Err(fail(
                    format!("looking up /{}/{name} in the container", resolved.join("/")),
                    errno,
                ))
            }
        }
    }
    let relative = relative(&resolved);
    // Nothing on the way is a symlink any more (each was read and replaced by its target), so a
    // symlink found now was swapped in meanwhile: RESOLVE_NO_SYMLINKS refuses it (ELOOP).
    let fd = open_in(&root_fd, &relative, OFlag::empty())
        .map_err(|errno| fail(format!("opening {path} inside the container"), errno))?;
    Ok(InRoot {
        root: root_fd,
        root_path: root.to_path_buf(),
        relative,
        fd,
    })
}

/// Resolves the directory that holds `path` inside `root` (creating missing ones) and returns
/// it with `path`'s last name, for calls that act on a name in a directory (`mknodat`,
/// `symlinkat`, `unlinkat`) and so never follow what is there now.
pub fn resolve_parent(root: &Path, path: &str) -> Result<(InRoot, String), StepError> {
    let mut parts = components(path);
    let name = match parts.pop() {
        Some(n) if n != ".." => n,
        _ => {
            return Err(StepError {
                what: format!("{path:?} does not name a file inside the container"),
                errno: Errno::EINVAL,
            })
        }
    };
    let parent = format!("/{}", parts.join("/"));
    Ok((resolve(root, &parent, Leaf::Dir)?, name))
}

/// Creates `name` in `parent` as `leaf` says (an existing one, made meanwhile, is fine).
fn create(parent: &OwnedFd, name: &str, leaf: Leaf) -> Result<(), Errno> {
    let made = match leaf {
        Leaf::Existing => return Err(Errno::ENOENT),
        Leaf::Dir => mkdirat(parent, name, Mode::from_bits_truncate(0o755)),
        Leaf::File => nix::fcntl::openat(
            parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop),
    };
    match made {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The normal components of `path` and its `..`s, in order (`.` and the root dropped).
fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

fn relative(parts: &[String]) -> PathBuf {
    parts.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_paths_are_created_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let p = resolve(root.path(), "/a/b/c", Leaf::Dir).unwrap();
        assert_eq!(p.host(), root.path().join("a/b/c"));
        assert!(p.path().is_dir());
        let f = resolve(root.path(), "/a/file", Leaf::File).unwrap();
        assert!(f.host().is_file());
        assert!(resolve(root.path(), "/missing", Leaf::Existing).is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_root_never_above_it() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // Absolute: resolved against the container's root, not the host's.
        symlink(outside.path(), root.path().join("abs")).unwrap();
        // Relative, climbing: clamped at the root.
        symlink("../../../../..", root.path().join("up")).unwrap();
        let p = resolve(root.path(), "/abs/newdir/deeper", Leaf::Dir).unwrap();
        assert!(p.host().starts_with(root.path()), "{}", p.host().display());
        assert!(!outside.path().join("newdir").exists(), "created on the host");
        let p = resolve(root.path(), "/up/etc", Leaf::Dir).unwrap();
        assert_eq!(p.host(), root.path().join("etc"));
        let p = resolve(root.path(), "/x/../../y", Leaf::Dir).unwrap();
        assert_eq!(p.host(), root.path().join("y"));
        // The descriptor reaches the directory inside the root.
        let inside = std::fs::canonicalize(p.path()).unwrap();
        assert_eq!(inside, std::fs::canonicalize(root.path().join("y")).unwrap());
    }

    #[test]
    fn symlink_loops_are_refused() {
        let root = tempfile::tempdir().unwrap();
        symlink("/b", root.path().join("a")).unwrap();
        symlink("/a", root.path().join("b")).unwrap();
        let err = resolve(root.path(), "/a/x", Leaf::Dir).unwrap_err();
        assert_eq!(err.errno, Errno::ELOOP);
    }

    #[test]
    fn a_dangling_symlink_to_the_host_creates_its_target_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let gone = outside.path().join("not-yet");
        symlink(&gone, root.path().join("data")).unwrap();
        let p = resolve(root.path(), "/data/newdir/deeper", Leaf::Dir).unwrap();
        assert!(!gone.exists(), "created on the host");
        let expected = root
            .path()
            .join(gone.strip_prefix("/").unwrap())
            .join("newdir/deeper");
        assert_eq!(p.host(), expected);
        assert!(expected.is_dir());
    }

    #[test]
    fn the_parent_is_resolved_and_the_name_kept() {
        let root = tempfile::tempdir().unwrap();
        symlink("/real", root.path().join("dev")).unwrap();
        let (dir, name) = resolve_parent(root.path(), "/dev/null").unwrap();
        assert_eq!(name, "null");
        assert_eq!(dir.host(), root.path().join("real"));
        assert!(resolve_parent(root.path(), "/").is_err());
        assert!(resolve_parent(root.path(), "/a/..").is_err());
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), "").unwrap();
        let err = resolve(root.path(), "/f/x", Leaf::Dir).unwrap_err();
        assert!(err.what.contains("/f"), "{}", err.what);
    }
}
