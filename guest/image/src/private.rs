//! Keeping the store private to its owner. Unpacked layers hold whatever images carry — setuid
//! binaries, device nodes, file capabilities — so the store root and every directory the store
//! makes are mode 0700 whatever the umask, an existing store found open to group or others is
//! closed, and a store root owned by another user is not used at all.

use nix::unistd::geteuid;
use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::ImageError;

/// The mode of every directory the store makes.
pub(crate) const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` and any missing parents, each with mode 0700 (set explicitly, so the umask
/// does not matter). An existing `dir` is left as it is.
pub(crate) fn create_dir_all(dir: &Path) -> Result<(), ImageError> {
    let mut missing = Vec::new();
    for ancestor in dir.ancestors() {
        if ancestor.as_os_str().is_empty() || fs::symlink_metadata(ancestor).is_ok() {
            break;
        }
        missing.push(ancestor);
    }
    for path in missing.into_iter().rev() {
        create_dir(path)?;
    }
    Ok(())
}

/// Creates the directory `path` with mode 0700; one that appeared meanwhile is fine.
pub(crate) fn create_dir(path: &Path) -> Result<(), ImageError> {
    match DirBuilder::new().mode(PRIVATE_DIR).create(path) {
        Ok(()) => set_private(path),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(ImageError::io("cannot create the store directory", path, e)),
    }
}

fn set_private(path: &Path) -> Result<(), ImageError> {
    fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR))
        .map_err(ImageError::io_at("cannot make private (chmod 0700)", path))
}

/// Refuses a store root that is not a directory, or is owned by another user than the
/// effective uid.
pub(crate) fn check_root(root: &Path) -> Result<(), ImageError> {
    let meta = fs::metadata(root).map_err(ImageError::io_at("cannot inspect the store", root))?;
    if !meta.is_dir() {
        return Err(ImageError::io(
            "cannot use as the image store (set SANDBOX_HOME to a directory)",
            root,
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    let euid = geteuid().as_raw();
    if meta.uid() != euid {
        return Err(ImageError::ForeignStore {
            path: root.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    Ok(())
}

/// Makes the existing directory `path` mode 0700 if group or others have any access; returns
/// whether it had to.
pub(crate) fn tighten(path: &Path) -> Result<bool, ImageError> {
    let meta = fs::metadata(path).map_err(ImageError::io_at("cannot inspect the store directory", path))?;
    if meta.mode() & 0o077 == 0 {
        return Ok(false);
    }
    set_private(path)?;
    Ok(true)
}

/// Makes each of `dirs` exist and be private: created 0700 when missing, tightened to 0700 when
/// open to group or others. Returns the directories that were tightened.
pub(crate) fn ensure_private(dirs: &[&Path]) -> Result<Vec<PathBuf>, ImageError> {
    let mut tightened = Vec::new();
    for dir in dirs {
        if fs::symlink_metadata(dir).is_err() {
            create_dir_all(dir)?;
        } else if tighten(dir)? {
            tightened.push(dir.to_path_buf());
        }
    }
    Ok(tightened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_whatever_the_umask_and_tightened_once() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for d in [base.path().join("a"), base.path().join("a/b"), deep.clone()] {
            assert_eq!(
                fs::metadata(&d).unwrap().mode() & 0o7777,
                0o700,
                "{}",
                d.display()
            );
        }
        fs::set_permissions(&deep, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ensure_private(&[&deep]).unwrap(), vec![deep.clone()]);
        assert_eq!(ensure_private(&[&deep]).unwrap(), Vec::<PathBuf>::new());
        assert_eq!(fs::metadata(&deep).unwrap().mode() & 0o7777, 0o700);
    }
}
