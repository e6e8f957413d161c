//! Root disks: an image flattened into a cached ext4 file, and cheap per-VM writable copies.
//!
//! - [`build_base`]: `sandbox_cache()/disks/<key>.ext4`, made with `mkfs.ext4 -d` from an
//!   unpacked root file system, built into a temporary file and renamed, then shared read-only.
//! - [`writable_copy`] / [`VmDisk`]: a VM's own copy of a base (reflink, else sparse copy).
//! - [`build_volume_from_dir`]: an ext4 image of a host directory, for volumes in VM mode.
//! - [`cache`]: the bounds on the cache (the newest few disks per purpose stay).

pub mod cache;
mod copy;
mod error;
mod mkfs;

pub use copy::{writable_copy, CopyKind, VmDisk};
pub use error::DiskError;
pub use mkfs::{find_mkfs, image_bytes, inode_count, measure, TreeSize};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The label of every root disk (the guest can mount `LABEL=sandbox-root`).
pub const ROOT_LABEL: &str = "sandbox-root";
/// The label of volume disks made from host directories.
pub const VOLUME_LABEL: &str = "sandbox-vol";

/// Where base disks are cached: `sandbox_cache()/disks`.
pub fn disk_cache() -> PathBuf {
    sandbox_protocol::paths::sandbox_cache().join("disks")
}

/// Builds (or finds) the base disk for `rootfs_dir` under `key` in [`disk_cache`].
pub fn build_base(rootfs_dir: &Path, key: &str) -> Result<PathBuf, DiskError> {
    build_base_in(&disk_cache(), rootfs_dir, key)
}

/// Builds (or finds) `<cache_dir>/<key>.ext4` holding `rootfs_dir`, labelled [`ROOT_LABEL`],
/// mode 0444. An existing file for the key is reused as is: the key names the content.
pub fn build_base_in(cache_dir: &Path, rootfs_dir: &Path, key: &str) -> Result<PathBuf, DiskError> {
    check_key(key)?;
    let dest = cache_dir.join(format!("{key}.ext4"));
    if dest.is_file() {
        cache::touch(&dest);
        return Ok(dest);
    }
    if !rootfs_dir.is_dir() {
        return Err(DiskError::NotADirectory(rootfs_dir.to_path_buf()));
    }
    fs::create_dir_all(cache_dir).map_err(|e| DiskError::io("cannot create", cache_dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{key}-"))
        .suffix(".ext4.tmp")
        .tempfile_in(cache_dir)
        .map_err(|e| DiskError::io("cannot create a file in", cache_dir, e))?;
    mkfs::make_ext4(rootfs_dir, tmp.path(), ROOT_LABEL)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o444))
        .map_err(|e| DiskError::io("cannot make read-only", tmp.path(), e))?;
    // A concurrent builder of the same key may have won; its file has the same content.
    tmp.persist(&dest)
        .map_err(|e| DiskError::io("cannot move the disk to", &dest, e.error))?;
    cache::sweep(cache_dir, Some(cache::RECENT));
    Ok(dest)
}

/// Builds an ext4 image of the host directory `dir` at `dest` (replaced if present), labelled
/// [`VOLUME_LABEL`], writable.
pub fn build_volume_from_dir(dir: &Path, dest: &Path) -> Result<(), DiskError> {
    if !dir.is_dir() {
        return Err(DiskError::NotADirectory(dir.to_path_buf()));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".volume-")
        .suffix(".ext4.tmp")
        .tempfile_in(parent)
        .map_err(|e| DiskError::io("cannot create a file in", parent, e))?;
    mkfs::make_ext4(dir, tmp.path(), VOLUME_LABEL)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .map_err(|e| DiskError::io("cannot set the mode of", tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| DiskError::io("cannot move the volume to", dest, e.error))?;
    Ok(())
}

fn check_key(key: &str) -> Result<(), DiskError> {
    let ok = !key.is_empty()
        && !key.starts_with('.')
        && key.len() <= 200
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DiskError::BadKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_plain_file_names() {
        assert!(check_key("sha256-abc_1.2").is_ok());
        for bad in ["", ".hidden", "a/b", "../x", "a b"] {
            assert!(matches!(check_key(bad), Err(DiskError::BadKey(_))), "{bad:?}");
        }
    }
}
