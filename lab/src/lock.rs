//! An exclusive `flock` on a file in the lab cache, held while an artifact is built so that
//! concurrent runs (parallel tests, CI jobs) build it once and the others wait and reuse it.

use crate::LabError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::path::Path;

/// Held lock; released on drop.
#[derive(Debug)]
pub struct CacheLock {
    _lock: Flock<File>,
}

impl CacheLock {
    /// Blocks until the lock file `path` is exclusively locked.
    pub fn acquire(path: &Path) -> Result<CacheLock, LabError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| LabError::io("open the lock file", path, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| LabError::io("lock", path, std::io::Error::from(errno)))?;
        Ok(CacheLock { _lock: lock })
    }
}
