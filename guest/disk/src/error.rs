//! The errors of disk building and copying: each names the bad input and the remedy.

use std::path::PathBuf;
use thiserror::Error;

/// Why a disk image could not be built or copied.
#[derive(Debug, Error)]
pub enum DiskError {
    /// mkfs.ext4 is not on `$PATH`.
    #[error("mkfs.ext4 is not installed: run `apt-get install e2fsprogs`")]
    MkfsMissing,
    /// mkfs.ext4 ran and failed; its stderr says why.
    #[error("mkfs.ext4 failed to build {} from {} ({status}): {stderr}", image.display(), source_dir.display())]
    Mkfs {
        image: PathBuf,
        source_dir: PathBuf,
        status: String,
        stderr: String,
    },
    /// The tree to put on the disk is not a directory.
    #[error("{} is not a directory: pass the root of an unpacked file tree", .0.display())]
    NotADirectory(PathBuf),
    /// A cache key that cannot be a file name.
    #[error("disk cache key {0:?} is not usable as a file name: use letters, digits, '-', '_' and '.', not starting with '.'")]
    BadKey(String),
    /// A file or directory operation failed.
    /// (The cause is part of the message, not a separate `source()`, so it is printed once.)
    #[error("{action} {}: {err}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
}

impl DiskError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        DiskError::Io {
            action,
            path: path.into(),
            err,
        }
    }
}
