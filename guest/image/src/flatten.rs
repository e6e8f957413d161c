//! Flattening unpacked layers into one plain directory tree (what an ext4 root disk is built
//! from): layers are applied bottom first, honouring overlayfs whiteouts (character devices
//! 0/0) and opaque directories, preserving owners, modes, symlinks, hard links, device nodes and
//! mtimes. The overlay markers themselves are not copied.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::fsops;
use crate::unpack::remove_any;

/// Applies `layers` (bottom first) into `dest`, which must be missing or an empty directory.
pub(crate) fn flatten(layers: &[PathBuf], dest: &Path) -> Result<(), ImageError> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ImageError::BadInput {
                    path: dest.to_path_buf(),
                    reason: "the directory to flatten the image into is not empty: pass an empty or missing directory"
                        .into(),
                });
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(ImageError::io_at("cannot create", dest))?
        }
        Err(e) => return Err(ImageError::io("cannot read", dest, e)),
    }
    let mut flat = Flattener {
        dest,
        dir_times: HashMap::new(),
    };
    for layer in layers {
        let meta = fs::symlink_metadata(layer).map_err(ImageError::io_at("cannot read layer", layer))?;
        flat.apply_dir_meta(dest, &meta)?;
        flat.dir_times
            .insert(dest.to_path_buf(), (meta.mtime(), meta.mtime_nsec()));
        let mut links = HashMap::new();
        flat.walk(layer, Path::new(""), &mut links)?;
    }
    // Directory mtimes last: creating and removing entries changed them along the way. A
    // directory a later layer removed (whiteout, opaque parent, replaced by a file) is skipped.
    for (path, (secs, nsecs)) in &flat.dir_times {
        if !fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        fsops::set_mtime_nofollow(path, *secs, *nsecs)
            .map_err(ImageError::io_at("cannot set the mtime of", path))?;
    }
    Ok(())
}

struct Flattener<'a> {
    dest: &'a Path,
    dir_times: HashMap<PathBuf, (i64, i64)>,
}

impl Flattener<'_> {
    /// Applies the directory `layer/rel` onto `dest/rel`; `links` maps (dev, inode) of files
    /// already copied from this layer to their copy, to recreate hard links.
    fn walk(
        &mut self,
        layer: &Path,
        rel: &Path,
        links: &mut HashMap<(u64, u64), PathBuf>,
    ) -> Result<(), ImageError> {
        let src_dir = layer.join(rel);
        let mut names: Vec<_> = fs::read_dir(&src_dir)
            .map_err(ImageError::io_at("cannot read layer directory", &src_dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(ImageError::io_at("cannot read layer directory", &src_dir))?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let src = layer.join(&rel);
            let dst = self.dest.join(&rel);
            let meta = fs::symlink_metadata(&src).map_err(ImageError::io_at("cannot inspect", &src))?;
            let ft = meta.file_type();
            if fsops::is_whiteout(&meta) {
                remove_any(&dst).map_err(ImageError::io_at("cannot remove (whiteout)", &dst))?;
                continue;
            }
            if ft.is_dir() {
                let opaque = fsops::get_xattr(&src, fsops::OPAQUE_XATTR)
                    .map_err(ImageError::io_at("cannot read xattrs of", &src))?
                    .is_some_and(|v| v == b"y");
                match fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() => {
                        if opaque {
                            clear_dir(&dst)?;
                        }
                    }
                    Ok(_) => {
                        remove_any(&dst).map_err(ImageError::io_at("cannot replace", &dst))?;
                        fs::create_dir(&dst).map_err(ImageError::io_at("cannot create directory", &dst))?;
                    }
                    Err(_) => {
                        fs::create_dir(&dst).map_err(ImageError::io_at("cannot create directory", &dst))?
                    }
                }
                self.apply_dir_meta(&dst, &meta)?;
                self.dir_times
                    .insert(dst.clone(), (meta.mtime(), meta.mtime_nsec()));
                self.walk(layer, &rel, links)?;
                continue;
            }
            remove_any(&dst).map_err(ImageError::io_at("cannot replace", &dst))?;
            if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = links.get(&key) {
                        fs::hard_link(first, &dst)
                            .map_err(ImageError::io_at("cannot create hard link", &dst))?;
                        continue;
                    }
                    links.insert(key, dst.clone());
                }
                fs::copy(&src, &dst).map_err(ImageError::io_at("cannot copy to", &dst))?;
                set_meta(&dst, &meta, true)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&src).map_err(ImageError::io_at("cannot read symlink", &src))?;
                symlink(&target, &dst).map_err(ImageError::io_at("cannot create symlink", &dst))?;
                set_meta(&dst, &meta, false)?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let rdev = meta.rdev();
                fsops::mknod(&dst, meta.mode(), libc::major(rdev), libc::minor(rdev)).map_err(
                    ImageError::io_at("cannot create device node (mknod needs root)", &dst),
                )?;
                set_meta(&dst, &meta, true)?;
            }
            // Sockets are not content: they are skipped.
        }
        Ok(())
    }

    fn apply_dir_meta(&self, dst: &Path, meta: &fs::Metadata) -> Result<(), ImageError> {
        lchown(dst, Some(meta.uid()), Some(meta.gid()))
            .map_err(ImageError::io_at("cannot set the owner of", dst))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(ImageError::io_at("cannot set the mode of", dst))
    }
}

/// Owner, then mode (chown clears set-id bits), then mtime; symlinks get no mode.
fn set_meta(dst: &Path, meta: &fs::Metadata, set_mode: bool) -> Result<(), ImageError> {
    lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(ImageError::io_at("cannot set the owner of", dst))?;
    if set_mode {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(ImageError::io_at("cannot set the mode of", dst))?;
    }
    fsops::set_mtime_nofollow(dst, meta.mtime(), meta.mtime_nsec())
        .map_err(ImageError::io_at("cannot set the mtime of", dst))
}

/// Removes everything inside `dir` (an opaque directory hides what lower layers put there).
fn clear_dir(dir: &Path) -> Result<(), ImageError> {
    for entry in fs::read_dir(dir).map_err(ImageError::io_at("cannot read", dir))? {
        let entry = entry.map_err(ImageError::io_at("cannot read", dir))?;
        let path = entry.path();
        remove_any(&path).map_err(ImageError::io_at("cannot remove", &path))?;
    }
    Ok(())
}
