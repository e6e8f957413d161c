//! Resolving a path inside the container's root without leaving it.
//!
//! An image (or an OCI bundle) is untrusted input: a symlink in it such as `data -> /etc` or
//! `data -> ../../..` must not turn a mount destination into a host path. [`resolve`] walks the
//! path one component at a time, reading each symlink itself and resolving its target against
//! the container's root (an absolute target restarts at the root, `..` never climbs above it), as
//! the kernel would once the root is the container's. Missing directories on the way are created
//! (mount points), so what it returns is a host path that lies inside `root`.

use crate::sys::StepError;
use nix::errno::Errno;
use std::fs;
use std::io;
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

fn step_error(what: String, e: &io::Error) -> StepError {
    StepError {
        what,
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Resolves `path` (as the container will see it) inside `root`, creating missing directories
/// on the way and the last component as `leaf` says. Returns the host path.
pub fn resolve(root: &Path, path: &str, leaf: Leaf) -> Result<PathBuf, StepError> {
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let host = join(root, &resolved).join(&name);
        let last = pending.is_empty();
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(StepError {
                        what: format!("resolving {path} inside the container: too many symlinks"),
                        errno: Errno::ELOOP,
                    });
                }
                let target = fs::read_link(&host)
                    .map_err(|e| step_error(format!("reading the symlink {}", host.display()), &e))?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            Ok(_) => resolved.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let want = if last { leaf } else { Leaf::Dir };
                match want {
                    Leaf::Existing => {
                        return Err(step_error(
                            format!("{path} does not exist inside the container"),
                            &e,
                        ))
                    }
                    Leaf::Dir => fs::create_dir(&host)
                        .or_else(|e| {
                            if e.kind() == io::ErrorKind::AlreadyExists {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })
                        .map_err(|e| {
                            step_error(format!("creating directory {path} inside the container"), &e)
                        })?,
                    Leaf::File => fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&host)
                        .map(drop)
                        .map_err(|e| step_error(format!("creating file {path} inside the container"), &e))?,
                }
                resolved.push(name);
            }
            Err(e) => return Err(step_error(format!("looking up {}", host.display()), &e)),
        }
    }
    Ok(join(root, &resolved))
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

fn join(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_paths_are_created_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let p = resolve(root.path(), "/a/b/c", Leaf::Dir).unwrap();
        assert_eq!(p, root.path().join("a/b/c"));
        assert!(p.is_dir());
        let f = resolve(root.path(), "/a/file", Leaf::File).unwrap();
        assert!(f.is_file());
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
        assert!(p.starts_with(root.path()), "{}", p.display());
        assert!(!outside.path().join("newdir").exists(), "created on the host");
        let p = resolve(root.path(), "/up/etc", Leaf::Dir).unwrap();
        assert_eq!(p, root.path().join("etc"));
        let p = resolve(root.path(), "/x/../../y", Leaf::Dir).unwrap();
        assert_eq!(p, root.path().join("y"));
    }

    #[test]
    fn symlink_loops_are_refused() {
        let root = tempfile::tempdir().unwrap();
        symlink("/b", root.path().join("a")).unwrap();
        symlink("/a", root.path().join("b")).unwrap();
        let err = resolve(root.path(), "/a/x", Leaf::Dir).unwrap_err();
        assert_eq!(err.errno, Errno::ELOOP);
    }
}
