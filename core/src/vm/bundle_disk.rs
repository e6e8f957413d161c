//! An OCI bundle's root file system as a VM disk: an ext4 image built once per content and
//! cached, then attached as it is (`root.readonly`) or as the VM's own writable copy.
//!
//! The cache key is a digest of the tree's metadata — every entry's path, type, mode, owner,
//! size, link target, device number, inode, and modification and change times (to the
//! nanosecond) — not of the file contents: walking a rootfs costs one `lstat` per entry (a
//! few milliseconds for an Alpine or busybox root), where hashing the contents would cost a
//! read of every byte on every `create`. Any write to a file changes its mtime and ctime, and
//! nobody can set a ctime back, so a changed tree never matches an old key; an identical tree
//! unpacked again gets new inodes and ctimes and simply builds a new image. containerd and
//! podman hand the same snapshot to every container of an image, so the second `create` of an
//! image finds its disk.

use super::VmError;
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The cache key of the tree at `rootfs`: `bundle-` and 32 hex digits of the metadata digest.
pub fn key(rootfs: &Path) -> Result<String, VmError> {
    let mut hasher = Sha256::new();
    walk(rootfs, Path::new(""), &mut hasher)?;
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    Ok(format!("bundle-{hex}"))
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VmError + 'a {
    move |source| VmError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Hashes `dir` (at `rel` below the root) entry by entry, in name order.
fn walk(root: &Path, rel: &Path, hasher: &mut Sha256) -> Result<(), VmError> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io("cannot read the bundle's root file system at", &dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io("cannot read the bundle's root file system at", &dir))?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(io("cannot inspect", &path))?;
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        for n in [
            u64::from(meta.mode()),
            u64::from(meta.uid()),
            u64::from(meta.gid()),
            meta.size(),
            meta.rdev(),
            meta.ino(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ] {
            hasher.update(n.to_le_bytes());
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io("cannot read the link", &path))?;
            hasher.update(target.as_os_str().as_encoded_bytes());
            hasher.update([0]);
        } else if meta.is_dir() {
            walk(root, &rel, hasher)?;
        }
    }
    Ok(())
}

/// The cached disk of the bundle root `rootfs`, built when missing; returns it and whether it
/// was built now.
pub fn cached(rootfs: &Path) -> Result<(PathBuf, bool), VmError> {
    let key = key(rootfs)?;
    let cache = sandbox_disk::disk_cache();
    let path = cache.join(format!("{key}.ext4"));
    if path.is_file() {
        sandbox_disk::cache::touch(&path);
        return Ok((path, false));
    }
    let built = sandbox_disk::build_base_in(&cache, rootfs, &key).map_err(|source| VmError::RootDisk {
        image: rootfs.display().to_string(),
        source,
    })?;
    Ok((built, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_every_change_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/hostname"), "a\n").unwrap();
        std::os::unix::fs::symlink("etc/hostname", dir.path().join("link")).unwrap();
        let first = key(dir.path()).unwrap();
        assert_eq!(first, key(dir.path()).unwrap(), "the same tree, the same key");
        assert!(first.starts_with("bundle-") && first.len() == 7 + 32, "{first}");
        fs::write(dir.path().join("etc/hostname"), "b\n").unwrap();
        let second = key(dir.path()).unwrap();
        assert_ne!(first, second, "a changed file changes the key");
        fs::set_permissions(
            dir.path().join("etc/hostname"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert_ne!(second, key(dir.path()).unwrap(), "a changed mode changes the key");
    }

    #[test]
    fn a_missing_root_is_named() {
        let err = key(Path::new("/nonexistent/rootfs")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/rootfs"), "{err}");
    }
}
