//! Unpacking a layer tar into a directory usable directly as an overlayfs lowerdir.
//!
//! Ownership, modes, symlinks, hard links, device nodes and mtimes are preserved. OCI whiteouts
//! become overlayfs whiteouts: `.wh.NAME` a character device 0/0 named NAME, `.wh..wh..opq` the
//! xattr `trusted.overlay.opaque=y` on its directory. Entries that would land outside the
//! layer (absolute paths, `..`, anything under a symlink) are refused. A layer is unpacked into a
//! temporary directory beside its final place and renamed there only once complete and verified
//! against its diff_id, so nobody sees a half-unpacked layer.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::fsops;
use crate::tarstream::{describe_read_error, relative_entry_path, StreamFacts, TarStream};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Unpacks the layer blob `blob` (plain or gzip tar) into `parent/<diff_hex>` unless that
/// directory already exists; returns the directory. The uncompressed stream must hash to
/// `diff_hex`.
pub(crate) fn unpack_layer(
    blob: &Path,
    diff_hex: &str,
    parent: &Path,
    what: &str,
) -> Result<PathBuf, ImageError> {
    let dest = parent.join(diff_hex);
    if dest.is_dir() {
        return Ok(dest);
    }
    // One unpacker per layer: others wait, then find it done.
    let lock_path = parent.join(format!(".tmp-lock-{diff_hex}"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(ImageError::io_at("cannot open the layer lock", &lock_path))?;
    fsops::flock(&lock, fsops::LockKind::Exclusive).map_err(ImageError::io_at("cannot lock", &lock_path))?;
    let result = unpack_locked(blob, diff_hex, &dest, parent, what);
    // Whoever waits on this (now unlinked) lock file finds the layer in place, or retries.
    let _ = fs::remove_file(&lock_path);
    drop(lock);
    result
}

fn unpack_locked(
    blob: &Path,
    diff_hex: &str,
    dest: &Path,
    parent: &Path,
    what: &str,
) -> Result<PathBuf, ImageError> {
    if dest.is_dir() {
        return Ok(dest.to_path_buf());
    }
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-unpack-")
        .tempdir_in(parent)
        .map_err(ImageError::io_at(
            "cannot create a temporary directory in",
            parent,
        ))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io_at("cannot set the mode of", tmp.path()))?;
    let stream = TarStream::open(blob, what)?;
    let facts = unpack_stream(stream, tmp.path(), what, UnpackAs::Layer)?;
    if facts.diff_hex != diff_hex {
        return Err(ImageError::corrupt(
            what,
            format!(
                "its uncompressed content hashes to sha256:{}, not the expected sha256:{diff_hex}",
                facts.diff_hex
            ),
        ));
    }
    let tmp_path = tmp.keep();
    match fs::rename(&tmp_path, dest) {
        Ok(()) => Ok(dest.to_path_buf()),
        Err(e) => {
            // Someone else finished the same layer first: theirs is as good as ours.
            let _ = fs::remove_dir_all(&tmp_path);
            if dest.is_dir() {
                Ok(dest.to_path_buf())
            } else {
                Err(ImageError::io("cannot move the unpacked layer to", dest, e))
            }
        }
    }
}

/// What a tar stream is unpacked as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnpackAs {
    /// An image layer: OCI whiteouts become overlayfs ones, device nodes and FIFOs are made
    /// (import already decided whether the layer may hold them).
    Layer,
    /// An image archive (`docker save`, an OCI archive): files, directories and links only;
    /// a device node or FIFO member is refused, and `.wh.` names are plain files.
    Archive,
}

/// Unpacks every entry of `stream` into `root` (an existing directory), then checks the stream
/// is complete.
pub(crate) fn unpack_stream(
    stream: TarStream,
    root: &Path,
    what: &str,
    mode: UnpackAs,
) -> Result<StreamFacts, ImageError> {
    let mut unpacker = Unpacker {
        root,
        what,
        whiteouts: mode == UnpackAs::Layer,
        dir_times: Vec::new(),
    };
    let mut archive = tar::Archive::new(stream);
    let outcome = (|| -> Result<(), ImageError> {
        let entries = archive
            .entries()
            .map_err(|e| ImageError::corrupt(what, describe_read_error(&e)))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::corrupt(what, describe_read_error(&e)))?;
            unpacker.entry(entry)?;
        }
        Ok(())
    })();
    let stream = archive.into_inner();
    let facts = match outcome {
        Ok(()) => stream.finish()?,
        Err(e @ ImageError::Corrupt { .. }) => return Err(stream.diagnose(e)),
        Err(e) => return Err(e),
    };
    for (path, mtime) in &unpacker.dir_times {
        fsops::set_mtime_nofollow(path, *mtime, 0)
            .map_err(ImageError::io_at("cannot set the mtime of", path))?;
    }
    Ok(facts)
}

struct Unpacker<'a> {
    root: &'a Path,
    what: &'a str,
    /// Unpacking a layer (whiteouts converted, device nodes made), not an archive.
    whiteouts: bool,
    /// Directory mtimes, set once every entry is in place (creating children changes them).
    dir_times: Vec<(PathBuf, i64)>,
}

/// The metadata of a tar entry that is applied to what it creates.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

impl Unpacker<'_> {
    fn unsafe_entry(&self, entry: &Path, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            what: self.what.to_string(),
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }

    /// A device node or FIFO member of an image archive, which holds only files and links.
    fn archive_special(&self, raw: &Path, kind: tar::EntryType) -> ImageError {
        ImageError::NotRegular {
            what: self.what.to_string(),
            path: raw.to_path_buf(),
            kind: match kind {
                tar::EntryType::Char => "a character device",
                tar::EntryType::Block => "a block device",
                _ => "a FIFO",
            },
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> ImageError {
        ImageError::corrupt(self.what, reason)
    }

    fn entry<R: io::Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry
            .path()
            .map_err(|e| self.corrupt(format!("bad entry path: {e}")))?
            .into_owned();
        let rel = relative_entry_path(&raw).map_err(|reason| self.unsafe_entry(&raw, reason))?;
        let header = entry.header();
        let meta = Meta {
            mode: header
                .mode()
                .map_err(|e| self.corrupt(format!("entry {}: bad mode: {e}", raw.display())))?
                & 0o7777,
            uid: id_field(header.uid(), &header.as_old().uid)
                .ok_or_else(|| self.corrupt(format!("entry {}: bad uid", raw.display())))?,
            gid: id_field(header.gid(), &header.as_old().gid)
                .ok_or_else(|| self.corrupt(format!("entry {}: bad gid", raw.display())))?,
            mtime: header
                .mtime()
                .ok()
                .and_then(|v| i64::try_from(v).ok())
                .unwrap_or(0),
        };
        let kind = header.entry_type();
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);

        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if self.whiteouts && name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&raw, &rel, &name);
        }
        if rel.as_os_str().is_empty() {
            // The layer root itself ("./"): only a directory makes sense there.
            if !kind.is_dir() {
                return Err(self.unsafe_entry(&raw, "only a directory can be the layer root"));
            }
            return self.apply_dir_meta(self.root, &meta);
        }
        if let Some(parent) = rel.parent() {
            self.prepare_parent(&raw, parent)?;
        }
        let path = self.root.join(&rel);
        let xattrs = pax_xattrs(&mut entry);

        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(m) => {
                        remove_any(&path).map_err(ImageError::io_at("cannot replace", &path))?;
                        fs::create_dir(&path).map_err(ImageError::io_at("cannot create directory", &path))?;
                        if self.whiteouts && fsops::is_whiteout(&m) {
                            // `.wh.NAME` then `NAME/` in one layer: the lower NAME is deleted and
                            // a new directory made, which for overlayfs is an opaque directory.
                            fsops::set_xattr(&path, fsops::OPAQUE_XATTR, b"y").map_err(ImageError::io_at(
                                "cannot mark opaque (needs root and xattr support)",
                                &path,
                            ))?;
                        }
                    }
                    Err(_) => {
                        fs::create_dir(&path).map_err(ImageError::io_at("cannot create directory", &path))?
                    }
                }
                self.apply_dir_meta(&path, &meta)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_any(&path).map_err(ImageError::io_at("cannot replace", &path))?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(ImageError::io_at("cannot create file", &path))?;
                let expected = entry.size();
                let got = io::copy(&mut entry, &mut file).map_err(|e| {
                    if e.kind() == ErrorKind::InvalidData || e.kind() == ErrorKind::UnexpectedEof {
                        self.corrupt(describe_read_error(&e))
                    } else {
                        ImageError::io("cannot write", &path, e)
                    }
                })?;
                if got != expected {
                    return Err(self.corrupt(format!(
                        "it is truncated inside entry {} ({got} of {expected} bytes)",
                        raw.display()
                    )));
                }
                drop(file);
                self.apply_meta(&path, &meta, true)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.corrupt(format!("entry {}: bad symlink target: {e}", raw.display())))?
                    .ok_or_else(|| self.corrupt(format!("symlink {} has no target", raw.display())))?
                    .into_owned();
                remove_any(&path).map_err(ImageError::io_at("cannot replace", &path))?;
                symlink(&target, &path).map_err(ImageError::io_at("cannot create symlink", &path))?;
                self.apply_meta(&path, &meta, false)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.corrupt(format!("entry {}: bad hard-link target: {e}", raw.display())))?
                    .ok_or_else(|| self.corrupt(format!("hard link {} has no target", raw.display())))?
                    .into_owned();
                let target_rel = relative_entry_path(&target)
                    .map_err(|r| self.unsafe_entry(&raw, format!("its target {}: {r}", target.display())))?;
                if let Some(parent) = target_rel.parent() {
                    self.check_parent(&raw, parent)?;
                }
                let target_path = self.root.join(&target_rel);
                match fs::symlink_metadata(&target_path) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(self.unsafe_entry(
                            &raw,
                            format!(
                                "its target {} is not an earlier file of the layer",
                                target.display()
                            ),
                        ))
                    }
                }
                if target_rel != rel {
                    remove_any(&path).map_err(ImageError::io_at("cannot replace", &path))?;
                    fs::hard_link(&target_path, &path)
                        .map_err(ImageError::io_at("cannot create hard link", &path))?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo if !self.whiteouts => {
                return Err(self.archive_special(&raw, kind));
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let type_bits = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                remove_any(&path).map_err(ImageError::io_at("cannot replace", &path))?;
                fsops::mknod(&path, type_bits | 0o600, major, minor).map_err(ImageError::io_at(
                    "cannot create device node (mknod needs root)",
                    &path,
                ))?;
                self.apply_meta(&path, &meta, true)?;
            }
            other => {
                return Err(ImageError::Unsupported {
                    what: format!("{}: entry {} of tar type {:?}", self.what, raw.display(), other),
                    remedy: "re-create the archive without sparse or vendor-specific entries".into(),
                })
            }
        }
        for (name, value) in xattrs {
            if let Err(e) = fsops::set_xattr(&path, &name, &value) {
                eprintln!(
                    "warning: {}: cannot set xattr {name} on {}: {e}",
                    self.what,
                    rel.display()
                );
            }
        }
        Ok(())
    }

    /// Converts an OCI whiteout entry into its overlayfs form.
    fn whiteout(&mut self, raw: &Path, rel: &Path, name: &str) -> Result<(), ImageError> {
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        self.prepare_parent(raw, parent_rel)?;
        let parent = self.root.join(parent_rel);
        if name == OPAQUE_MARKER {
            return fsops::set_xattr(&parent, fsops::OPAQUE_XATTR, b"y").map_err(ImageError::io_at(
                "cannot mark opaque (needs root and xattr support)",
                &parent,
            ));
        }
        if name.starts_with(OPAQUE_MARKER) || name.starts_with(".wh..wh.") {
            // Other `.wh..wh.` names are AUFS bookkeeping with no meaning here.
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(self.unsafe_entry(raw, "malformed whiteout"));
        }
        let path = parent.join(hidden);
        if fs::symlink_metadata(&path).is_ok() {
            // The same layer also has NAME: a whiteout only hides lower layers, so NAME stays.
            return Ok(());
        }
        fsops::mknod(&path, libc::S_IFCHR, 0, 0).map_err(ImageError::io_at(
            "cannot create whiteout (mknod needs root)",
            &path,
        ))
    }

    /// Makes sure every directory above an entry exists as a real directory (not a symlink);
    /// missing ones are created with mode 0755.
    fn prepare_parent(&self, raw: &Path, parent: &Path) -> Result<(), ImageError> {
        let mut cur = self.root.to_path_buf();
        for part in parent.components() {
            cur.push(part);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_entry(
                        raw,
                        format!(
                            "it would be written through the symlink {}",
                            part_display(&cur, self.root)
                        ),
                    ))
                }
                Ok(_) => {
                    return Err(self.unsafe_entry(
                        raw,
                        format!("{} is not a directory", part_display(&cur, self.root)),
                    ))
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(ImageError::io_at("cannot create directory", &cur))?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                        .map_err(ImageError::io_at("cannot set the mode of", &cur))?;
                }
                Err(e) => return Err(ImageError::io("cannot inspect", &cur, e)),
            }
        }
        Ok(())
    }

    /// Like [`Self::prepare_parent`] but creates nothing: for hard-link targets.
    fn check_parent(&self, raw: &Path, parent: &Path) -> Result<(), ImageError> {
        let mut cur = self.root.to_path_buf();
        for part in parent.components() {
            cur.push(part);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                _ => {
                    return Err(self.unsafe_entry(
                        raw,
                        format!(
                            "its target goes through {}, which is not a directory",
                            part_display(&cur, self.root)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    fn apply_dir_meta(&mut self, path: &Path, meta: &Meta) -> Result<(), ImageError> {
        lchown(path, Some(meta.uid), Some(meta.gid))
            .map_err(ImageError::io_at("cannot set the owner of", path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))
            .map_err(ImageError::io_at("cannot set the mode of", path))?;
        self.dir_times.push((path.to_path_buf(), meta.mtime));
        Ok(())
    }

    /// Owner, then mode (chown clears set-id bits), then mtime; symlinks get no mode.
    fn apply_meta(&self, path: &Path, meta: &Meta, set_mode: bool) -> Result<(), ImageError> {
        lchown(path, Some(meta.uid), Some(meta.gid))
            .map_err(ImageError::io_at("cannot set the owner of", path))?;
        if set_mode {
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))
                .map_err(ImageError::io_at("cannot set the mode of", path))?;
        }
        fsops::set_mtime_nofollow(path, meta.mtime, 0)
            .map_err(ImageError::io_at("cannot set the mtime of", path))
    }
}

/// A uid or gid from a header: the parsed value, or 0 when the field is left empty (some
/// writers do); `None` when it is garbage or does not fit 32 bits.
fn id_field(parsed: io::Result<u64>, raw: &[u8]) -> Option<u32> {
    match parsed {
        Ok(v) => u32::try_from(v).ok(),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    }
}

fn part_display(path: &Path, root: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// Extended attributes carried in PAX `SCHILY.xattr.*` records (overlayfs' own are dropped:
/// they would change how the layer is merged).
fn pax_xattrs<R: io::Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if !name.starts_with("trusted.overlay.") {
                        out.push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    out
}

/// Removes whatever is at `path` (a directory with its contents); absent is fine.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
