//! Exclusive advisory locks (flock) that serialise concurrent builders of the same cache entry.

use crate::KernelError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::path::Path;

/// Holds an exclusive flock on a lock file until dropped.
pub struct CacheLock {
    _lock: Flock<File>,
}

/// Blocks until this process holds the exclusive lock on `path` (created if needed).
pub fn lock(path: &Path) -> Result<CacheLock, KernelError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| KernelError::io("cannot open lock file", path, e))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| KernelError::io("cannot lock", path, errno.into()))?;
    Ok(CacheLock { _lock: lock })
}
