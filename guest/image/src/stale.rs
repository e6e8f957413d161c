//! Removing what killed imports and unpacks left behind: staging directories under `tmp/` whose
//! owner process is gone, and temporary files and directories (`.tmp-*`) beside the unpacked
//! layers and their shifted copies when no one holds the store lock.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::ImageError;
use crate::fsops::LockKind;
use crate::layout::Layout;
use crate::owner::Owner;
use crate::unpack::remove_any;

/// A staging directory without a readable owner record is taken for stale only when older
/// than this: its owner may be between creating it and writing the record.
pub(crate) const UNOWNED_GRACE: Duration = Duration::from_secs(60);

/// Removes the staging directories of imports that no longer run and, when the store lock is
/// free, the temporary leftovers of killed unpacks. Returns what was removed.
pub(crate) fn remove_stale(layout: &Layout) -> Result<Vec<PathBuf>, ImageError> {
    let mut removed = remove_stale_staging(layout)?;
    if let Some(_lock) = layout.try_lock(LockKind::Exclusive)? {
        // Unpacks hold the shared lock: with the exclusive one, none is in progress.
        let ranges = layout.userns_ranges();
        for dir in [&layout.layers, &layout.guest_layers].into_iter().chain(&ranges) {
            removed.extend(remove_temporaries(dir)?);
        }
    }
    Ok(removed)
}

/// Removes every entry of `tmp/` whose owner is gone.
pub(crate) fn remove_stale_staging(layout: &Layout) -> Result<Vec<PathBuf>, ImageError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(&layout.tmp) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(ImageError::io("cannot read", &layout.tmp, e)),
    };
    for entry in entries {
        let path = entry
            .map_err(ImageError::io_at("cannot read", &layout.tmp))?
            .path();
        if is_stale(&path) {
            remove_any(&path).map_err(ImageError::io_at(
                "cannot remove the stale staging directory",
                &path,
            ))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Whether the staging entry `path` belongs to no running import.
fn is_stale(path: &Path) -> bool {
    match Owner::read(path) {
        Some(owner) => !owner.alive(),
        None => older_than(path, UNOWNED_GRACE),
    }
}

fn older_than(path: &Path, age: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|a| a > age)
}

/// Removes the `.tmp-*` entries of `dir` (call with the exclusive store lock held).
fn remove_temporaries(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(ImageError::io("cannot read", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(ImageError::io_at("cannot read", dir))?;
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            let path = entry.path();
            remove_any(&path).map_err(ImageError::io_at("cannot remove the leftover", &path))?;
            removed.push(path);
        }
    }
    Ok(removed)
}
