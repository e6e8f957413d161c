//! Copies of unpacked layers for a user namespace (`sandbox run --userns`): the same tree with
//! every owner moved into the host id range the namespace maps, so that the container's root —
//! an unprivileged host uid — owns what root owns in the image, and can change image files
//! (overlayfs copies them up as their owner).
//!
//! Files are copied, not linked: an owner belongs to an inode. Hard links within a layer stay
//! hard links; modes and set-id bits, symlinks, device nodes, FIFOs, mtimes and extended
//! attributes are kept, with the ids inside POSIX ACLs and version 3 file capabilities shifted
//! too. overlayfs's markers become the ones an overlay mounted inside a user namespace reads
//! (mount option `userxattr`): whiteouts (character devices 0/0) stay as they are, the opaque
//! mark `trusted.overlay.opaque` becomes `user.overlay.opaque`, and `user.overlay.*` attributes
//! an image carried itself are dropped (they would change how the layers merge). A file owned
//! by an id outside the range is refused, naming it.
//!
//! Each copy is made once per layer and range, under `layers/userns/<uid>-<gid>/<hex>` (the
//! layer's own name): built in a temporary directory beside it under a per-layer lock, then
//! renamed into place, so nobody sees half a copy. Copies are kept and reused; the store's
//! garbage collection removes them with their layer (see `commit`).

use std::collections::HashMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{
    lchown, symlink, DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::fsops::{self, LockKind, OPAQUE_XATTR};

/// The opaque mark an overlay mounted with `userxattr` reads.
pub(crate) const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// The host ids a user namespace maps its ids `0..count` onto: container uid `n` is host uid
/// `uid + n`, container gid `n` host gid `gid + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdShift {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

/// What making one shifted copy took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Copied {
    /// Files, directories, links and nodes.
    pub entries: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

/// The copy of `layer` shifted by `shift`, at `parent/name`, made unless it is there already.
/// Returns it and, when it was made now, what the copy took. Call with the store lock held
/// (shared), so no garbage collection runs meanwhile.
pub(crate) fn shifted_layer(
    layer: &Path,
    name: &str,
    parent: &Path,
    shift: IdShift,
    what: &str,
) -> Result<(PathBuf, Option<Copied>), ImageError> {
    let dest = parent.join(name);
    if dest.is_dir() {
        return Ok((dest, None));
    }
    // One copier per layer and range: others wait, then find it done.
    let lock_path = parent.join(format!(".tmp-lock-{name}"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(ImageError::io_at("cannot open the layer lock", &lock_path))?;
    fsops::flock(&lock, LockKind::Exclusive).map_err(ImageError::io_at("cannot lock", &lock_path))?;
    let result = shift_locked(layer, &dest, parent, shift, what);
    // Whoever waits on this (now unlinked) lock file finds the copy in place, or retries.
    let _ = fs::remove_file(&lock_path);
    drop(lock);
    result
}

fn shift_locked(
    layer: &Path,
    dest: &Path,
    parent: &Path,
    shift: IdShift,
    what: &str,
) -> Result<(PathBuf, Option<Copied>), ImageError> {
    if dest.is_dir() {
        return Ok((dest.to_path_buf(), None));
    }
    let root_meta = fs::symlink_metadata(layer).map_err(ImageError::io_at("cannot read layer", layer))?;
    if !root_meta.is_dir() {
        return Err(ImageError::io(
            "cannot shift the layer",
            layer,
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    eprintln!(
        "copying {what} for a user namespace (owners from {}:{})...",
        shift.uid, shift.gid
    );
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-shift-")
        .tempdir_in(parent)
        .map_err(ImageError::io_at(
            "cannot create a temporary directory in",
            parent,
        ))?;
    let copied = copy_tree(layer, tmp.path(), shift, what)?;
    let tmp_path = tmp.keep();
    match fs::rename(&tmp_path, dest) {
        Ok(()) => Ok((dest.to_path_buf(), Some(copied))),
        Err(e) => {
            let _ = crate::unpack::remove_any(&tmp_path);
            // Someone else finished the same copy first: theirs is as good as ours.
            if dest.is_dir() {
                Ok((dest.to_path_buf(), None))
            } else {
                Err(ImageError::io("cannot move the shifted layer to", dest, e))
            }
        }
    }
}

/// Copies the tree `src` into the existing, empty directory `dest`, shifting every id; `dest`
/// itself gets `src`'s owner (shifted), mode, attributes and mtime.
pub(crate) fn copy_tree(src: &Path, dest: &Path, shift: IdShift, what: &str) -> Result<Copied, ImageError> {
    let meta = fs::symlink_metadata(src).map_err(ImageError::io_at("cannot read layer", src))?;
    let mut copier = Copier {
        root: src,
        shift,
        what,
        links: HashMap::new(),
        dir_times: Vec::new(),
        copied: Copied::default(),
    };
    copier.copy_dir(src, dest)?;
    copier.finish(src, dest, &meta, true)?;
    copier
        .dir_times
        .push((dest.to_path_buf(), meta.mtime(), meta.mtime_nsec()));
    // Directory mtimes last: creating their entries changed them.
    for (path, secs, nsecs) in &copier.dir_times {
        fsops::set_mtime_nofollow(path, *secs, *nsecs)
            .map_err(ImageError::io_at("cannot set the mtime of", path))?;
    }
    Ok(copier.copied)
}

struct Copier<'a> {
    /// The layer being copied (for naming entries in errors).
    root: &'a Path,
    shift: IdShift,
    what: &'a str,
    /// (device, inode) of files with several links, to their first copy.
    links: HashMap<(u64, u64), PathBuf>,
    dir_times: Vec<(PathBuf, i64, i64)>,
    copied: Copied,
}

impl Copier<'_> {
    fn copy_dir(&mut self, src: &Path, dest: &Path) -> Result<(), ImageError> {
        let entries = fs::read_dir(src).map_err(ImageError::io_at("cannot read layer directory", src))?;
        for entry in entries {
            let entry = entry.map_err(ImageError::io_at("cannot read layer directory", src))?;
            let from = entry.path();
            let to = dest.join(entry.file_name());
            let meta = fs::symlink_metadata(&from).map_err(ImageError::io_at("cannot inspect", &from))?;
            let ft = meta.file_type();
            if ft.is_socket() {
                // Sockets are not content.
                continue;
            }
            self.copied.entries += 1;
            if ft.is_dir() {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&to)
                    .map_err(ImageError::io_at("cannot create directory", &to))?;
                self.copy_dir(&from, &to)?;
                self.finish(&from, &to, &meta, true)?;
                self.dir_times.push((to, meta.mtime(), meta.mtime_nsec()));
                continue;
            }
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&key) {
                    fs::hard_link(first, &to).map_err(ImageError::io_at("cannot create hard link", &to))?;
                    continue;
                }
            }
            if ft.is_file() {
                copy_file(&from, &to)?;
                self.copied.bytes += meta.len();
                self.finish(&from, &to, &meta, true)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&from).map_err(ImageError::io_at("cannot read symlink", &from))?;
                symlink(&target, &to).map_err(ImageError::io_at("cannot create symlink", &to))?;
                self.finish(&from, &to, &meta, false)?;
            } else {
                // Character and block devices, FIFOs; whiteouts are character devices 0/0.
                let rdev = meta.rdev();
                fsops::mknod(&to, meta.mode(), libc::major(rdev), libc::minor(rdev)).map_err(
                    ImageError::io_at("cannot create device node (mknod needs root)", &to),
                )?;
                self.finish(&from, &to, &meta, true)?;
            }
            fsops::set_mtime_nofollow(&to, meta.mtime(), meta.mtime_nsec())
                .map_err(ImageError::io_at("cannot set the mtime of", &to))?;
            if meta.nlink() > 1 {
                self.links.insert(key, to);
            }
        }
        Ok(())
    }

    /// Owner (shifted), then mode (chown clears set-id bits), then extended attributes (chown
    /// clears file capabilities too); symlinks get no mode.
    fn finish(&self, from: &Path, to: &Path, meta: &fs::Metadata, set_mode: bool) -> Result<(), ImageError> {
        let uid = self.host_id(from, "uid", meta.uid())?;
        let gid = self.host_id(from, "gid", meta.gid())?;
        lchown(to, Some(uid), Some(gid)).map_err(ImageError::io_at("cannot set the owner of", to))?;
        if set_mode {
            fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(ImageError::io_at("cannot set the mode of", to))?;
        }
        self.copy_xattrs(from, to)
    }

    fn copy_xattrs(&self, from: &Path, to: &Path) -> Result<(), ImageError> {
        for name in fsops::list_xattrs(from).map_err(ImageError::io_at("cannot list the xattrs of", from))? {
            let target = match name.as_str() {
                OPAQUE_XATTR => USER_OPAQUE_XATTR,
                n if n.starts_with("trusted.overlay.") || n.starts_with("user.overlay.") => continue,
                n => n,
            };
            let Some(value) = fsops::get_xattr(from, &name)
                .map_err(ImageError::io_at("cannot read the xattrs of", from))?
            else {
                continue;
            };
            let value = match target {
                "system.posix_acl_access" | "system.posix_acl_default" => self.shift_acl(from, value)?,
                "security.capability" => self.shift_capability(from, value)?,
                _ => value,
            };
            fsops::set_xattr(to, target, &value).map_err(ImageError::io_at("cannot set an xattr on", to))?;
        }
        Ok(())
    }

    /// A POSIX ACL (`struct posix_acl_xattr_header` then 8-byte entries: tag, perm, id) with
    /// the ids of its named-user and named-group entries shifted.
    fn shift_acl(&self, from: &Path, mut acl: Vec<u8>) -> Result<Vec<u8>, ImageError> {
        const ACL_USER: u16 = 0x02;
        const ACL_GROUP: u16 = 0x08;
        for entry in acl.get_mut(4..).unwrap_or_default().chunks_exact_mut(8) {
            let tag = u16::from_le_bytes([entry[0], entry[1]]);
            let kind = match tag {
                ACL_USER => "uid",
                ACL_GROUP => "gid",
                _ => continue,
            };
            let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
            let host = self.host_id(from, kind, id)?;
            entry[4..8].copy_from_slice(&host.to_le_bytes());
        }
        Ok(acl)
    }

    /// File capabilities: version 3 (24 bytes) names the uid that is root for them, shifted
    /// like an owner; version 2 applies to whatever user namespace runs the file, as it is.
    fn shift_capability(&self, from: &Path, mut caps: Vec<u8>) -> Result<Vec<u8>, ImageError> {
        const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
        if caps.len() == 24 {
            let magic = u32::from_le_bytes([caps[0], caps[1], caps[2], caps[3]]);
            if magic & 0xff00_0000 == VFS_CAP_REVISION_3 {
                let root = u32::from_le_bytes([caps[20], caps[21], caps[22], caps[23]]);
                let host = self.host_id(from, "uid", root)?;
                caps[20..24].copy_from_slice(&host.to_le_bytes());
            }
        }
        Ok(caps)
    }

    /// The host id of the container's `id` (a `kind`, "uid" or "gid"), found on `path`.
    fn host_id(&self, path: &Path, kind: &'static str, id: u32) -> Result<u32, ImageError> {
        let base = if kind == "uid" {
            self.shift.uid
        } else {
            self.shift.gid
        };
        if id < self.shift.count {
            if let Some(host) = base.checked_add(id) {
                return Ok(host);
            }
        }
        Err(ImageError::OutsideUserns {
            what: self.what.to_string(),
            entry: format!("/{}", path.strip_prefix(self.root).unwrap_or(path).display()),
            kind,
            id,
            count: self.shift.count,
        })
    }
}

/// Copies the content of the regular file `from` into the new file `to` (mode 0600 until its
/// metadata is applied).
fn copy_file(from: &Path, to: &Path) -> Result<(), ImageError> {
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(ImageError::io_at("cannot open", from))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(to)
        .map_err(ImageError::io_at("cannot create file", to))?;
    io::copy(&mut src, &mut dst).map_err(ImageError::io_at("cannot copy to", to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::chown;

    const SHIFT: IdShift = IdShift {
        uid: 100_000,
        gid: 200_000,
        count: 65536,
    };

    fn lstat(path: &Path) -> fs::Metadata {
        fs::symlink_metadata(path).unwrap()
    }

    /// A layer as unpack leaves it: owners 0 and others, a set-uid file, a hard link, a
    /// symlink, a FIFO, a whiteout and an opaque directory.
    fn sample_layer(dir: &Path) {
        fs::create_dir(dir.join("etc")).unwrap();
        fs::write(dir.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(dir.join("etc/owned"), "by 1000:50\n").unwrap();
        chown(dir.join("etc/owned"), Some(1000), Some(50)).unwrap();
        fs::write(dir.join("su"), "pretend\n").unwrap();
        fs::set_permissions(dir.join("su"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(dir.join("su"), dir.join("su-again")).unwrap();
        symlink("etc/passwd", dir.join("link")).unwrap();
        fsops::mknod(&dir.join("fifo"), libc::S_IFIFO | 0o640, 0, 0).unwrap();
        fsops::mknod(&dir.join("gone"), libc::S_IFCHR, 0, 0).unwrap();
        fs::create_dir(dir.join("opaque")).unwrap();
        fsops::set_xattr(&dir.join("opaque"), OPAQUE_XATTR, b"y").unwrap();
        fsops::set_xattr(&dir.join("etc"), "user.overlay.redirect", b"/elsewhere").unwrap();
        fsops::set_xattr(&dir.join("etc/passwd"), "user.note", b"kept").unwrap();
        fsops::set_mtime_nofollow(&dir.join("etc/passwd"), 1_000_000, 0).unwrap();
        fsops::set_mtime_nofollow(&dir.join("etc"), 2_000_000, 0).unwrap();
    }

    #[test]
    fn owners_are_shifted_and_everything_else_kept() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        sample_layer(src.path());
        let copied = copy_tree(src.path(), dest.path(), SHIFT, "the test layer").unwrap();
        let d = dest.path();
        assert_eq!(copied.entries, 9, "{copied:?}");
        let owner = |p: &str| {
            let m = lstat(&d.join(p));
            (m.uid(), m.gid())
        };
        assert_eq!(owner(""), (100_000, 200_000), "the layer root itself");
        assert_eq!(owner("etc/passwd"), (100_000, 200_000));
        assert_eq!(owner("etc/owned"), (101_000, 200_050));
        assert_eq!(owner("link"), (100_000, 200_000));
        assert_eq!(owner("gone"), (100_000, 200_000));
        assert_eq!(
            fs::read_to_string(d.join("etc/passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(
            lstat(&d.join("su")).mode() & 0o7777,
            0o4755,
            "set-uid survives the chown"
        );
        assert_eq!(lstat(&d.join("su")).ino(), lstat(&d.join("su-again")).ino());
        assert_eq!(fs::read_link(d.join("link")).unwrap(), Path::new("etc/passwd"));
        assert!(lstat(&d.join("fifo")).file_type().is_fifo());
        assert_eq!(lstat(&d.join("fifo")).mode() & 0o7777, 0o640);
        assert_eq!(lstat(&d.join("etc/passwd")).mtime(), 1_000_000);
        assert_eq!(lstat(&d.join("etc")).mtime(), 2_000_000);
        assert_eq!(
            fsops::get_xattr(&d.join("etc/passwd"), "user.note")
                .unwrap()
                .as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(
            fsops::get_xattr(&d.join("etc"), "user.overlay.redirect").unwrap(),
            None,
            "an image's own overlay attributes are dropped"
        );
    }

    #[test]
    fn whiteouts_are_kept_and_the_opaque_mark_is_translated() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        sample_layer(src.path());
        copy_tree(src.path(), dest.path(), SHIFT, "the test layer").unwrap();
        let gone = lstat(&dest.path().join("gone"));
        assert!(fsops::is_whiteout(&gone), "a 0/0 character device still");
        let opaque = dest.path().join("opaque");
        assert_eq!(
            fsops::get_xattr(&opaque, USER_OPAQUE_XATTR).unwrap().as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(fsops::get_xattr(&opaque, OPAQUE_XATTR).unwrap(), None);
    }

    #[test]
    fn acl_and_capability_ids_are_shifted() {
        let mut acl = vec![2, 0, 0, 0];
        for (tag, id) in [(0x01u16, u32::MAX), (0x02, 1000), (0x08, 50), (0x20, u32::MAX)] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&7u16.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let copier = Copier {
            root: Path::new("/l"),
            shift: SHIFT,
            what: "t",
            links: HashMap::new(),
            dir_times: Vec::new(),
            copied: Copied::default(),
        };
        let shifted = copier.shift_acl(Path::new("/l/f"), acl.clone()).unwrap();
        let id_at = |v: &[u8], entry: usize| {
            let o = 4 + entry * 8 + 4;
            u32::from_le_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]])
        };
        assert_eq!(id_at(&shifted, 0), u32::MAX, "owner entries carry no id");
        assert_eq!(id_at(&shifted, 1), 101_000);
        assert_eq!(id_at(&shifted, 2), 200_050);
        let mut caps = vec![0u8; 24];
        caps[..4].copy_from_slice(&0x0300_0000u32.to_le_bytes());
        let shifted = copier.shift_capability(Path::new("/l/f"), caps).unwrap();
        assert_eq!(
            u32::from_le_bytes([shifted[20], shifted[21], shifted[22], shifted[23]]),
            100_000
        );
    }

    #[test]
    fn an_owner_outside_the_range_is_refused_naming_the_file() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("home")).unwrap();
        fs::write(src.path().join("home/big"), "").unwrap();
        chown(src.path().join("home/big"), Some(70_000), None).unwrap();
        let err = copy_tree(src.path(), dest.path(), SHIFT, "layer 1 of image \"x\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/home/big") && err.contains("uid 70000") && err.contains("without --userns"),
            "{err}"
        );
    }

    #[test]
    fn a_copy_is_made_once_then_found() {
        let src = tempfile::tempdir().unwrap();
        let parent = tempfile::tempdir().unwrap();
        sample_layer(src.path());
        let (dir, made) = shifted_layer(src.path(), "abc", parent.path(), SHIFT, "t").unwrap();
        assert_eq!(dir, parent.path().join("abc"));
        assert!(made.is_some());
        let (again, made) = shifted_layer(src.path(), "abc", parent.path(), SHIFT, "t").unwrap();
        assert_eq!((again, made), (dir, None));
        let names: Vec<_> = fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["abc"], "no lock or temporary left beside it");
    }
}
