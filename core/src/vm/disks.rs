//! A VM's disks: the image's root disk (built once per content key, cached under
//! `$SANDBOX_CACHE/disks`), the per-VM writable copy in the sandbox's directory, one ext4 image
//! per directory volume (a snapshot: writes in the VM do not reach the host directory), and
//! `--keep-disk`'s kept copy under `$SANDBOX_HOME/disks`.

use super::VmError;
use sandbox_disk::VmDisk;
use sandbox_image::ResolvedImage;
use std::fs;
use std::path::{Path, PathBuf};

/// The disk-cache key of an image's root file system (`content_key` made a file name).
pub fn disk_key(image: &ResolvedImage) -> String {
    image.content_key().replace(':', "-")
}

/// The cached root disk of `image`, built (from the image flattened into a temporary directory
/// that is removed again) when missing.
pub fn root_disk(image: &ResolvedImage) -> Result<PathBuf, VmError> {
    let key = disk_key(image);
    let cache = sandbox_disk::disk_cache();
    let cached = cache.join(format!("{key}.ext4"));
    if cached.is_file() {
        sandbox_disk::cache::touch(&cached);
        return Ok(cached);
    }
    fs::create_dir_all(&cache).map_err(|source| VmError::Io {
        what: "cannot create the disk cache",
        path: cache.clone(),
        source,
    })?;
    let tree = tempfile::Builder::new()
        .prefix(".flatten-")
        .tempdir_in(&cache)
        .map_err(|source| VmError::Io {
            what: "cannot create a temporary directory in",
            path: cache.clone(),
            source,
        })?;
    image.flatten_into(tree.path()).map_err(|source| VmError::Image {
        image: image.name.clone(),
        source,
    })?;
    eprintln!("building the root disk of image {:?}...", image.name);
    sandbox_disk::build_base(tree.path(), &key).map_err(|source| VmError::RootDisk {
        image: image.name.clone(),
        source,
    })
}

/// The per-VM writable copy of `base` at `dest`.
pub fn writable_copy(base: &Path, dest: &Path, image: &str) -> Result<VmDisk, VmError> {
    VmDisk::create(base, dest).map_err(|source| VmError::RootDisk {
        image: image.to_string(),
        source,
    })
}

/// The disk for a volume: an ext4 image made from a directory (in `dir`), or an image file as
/// it is.
pub fn volume_disk(host: &Path, dir: &Path, index: usize) -> Result<PathBuf, VmError> {
    if !host.is_dir() {
        return Ok(host.to_path_buf());
    }
    let dest = dir.join(format!("volume-{index}.ext4"));
    eprintln!("making an ext4 image of volume {}...", host.display());
    sandbox_disk::build_volume_from_dir(host, &dest).map_err(|source| VmError::VolumeDisk {
        host: host.to_path_buf(),
        source,
    })?;
    Ok(dest)
}

/// Where `--keep-disk` puts per-VM root disks: `$SANDBOX_HOME/disks`.
pub fn kept_disk_dir() -> PathBuf {
    sandbox_protocol::paths::sandbox_home().join("disks")
}

/// Moves the per-VM disk out of the sandbox's directory (which is about to go) and keeps it.
pub fn keep(root: VmDisk, id: &str) -> Result<PathBuf, VmError> {
    let dir = kept_disk_dir();
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| VmError::Io { what, path, source }
    };
    fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
    let dest = dir.join(format!("vm-{id}.ext4"));
    fs::rename(root.path(), &dest).map_err(io("cannot move the per-VM disk to", &dest))?;
    // The file left `root`'s path; dropping it now removes nothing.
    root.keep();
    Ok(dest)
}
