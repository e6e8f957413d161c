//! Writing deterministic layer tars: from a directory on disk (entries sorted by name, metadata
//! as on disk, hard links kept), and from a small synthetic tree (fixed mtime, owner root) for
//! the default image and the guest layer — the same input always gives the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::devices::{self, DevicePolicy, SpecialEntry};
use crate::error::ImageError;
use crate::regular::{open_regular, ExactLen, Regular};

/// The mtime of every entry of a synthetic tree: 2000-01-01T00:00:00Z.
pub(crate) const FIXED_MTIME: u64 = 946_684_800;

/// What a synthetic tree entry is.
#[derive(Debug, Clone)]
pub(crate) enum SynthKind {
    Dir,
    Bytes(Vec<u8>),
    /// A regular file whose content is read from this host path when the tar is written.
    FileFrom(PathBuf),
    Symlink(String),
}

/// A small file tree described in memory, written as a tar with sorted entries owned by root.
#[derive(Debug, Default)]
pub(crate) struct SynthTree {
    entries: BTreeMap<String, (u32, SynthKind)>,
}

impl SynthTree {
    /// Adds an entry at `path` (relative, `/`-separated), creating missing parent directories
    /// with mode 0755. A later entry at the same path replaces an earlier one.
    pub(crate) fn add(&mut self, path: &str, mode: u32, kind: SynthKind) {
        let path = path.trim_matches('/');
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.entries
                .entry(prefix.clone())
                .or_insert((0o755, SynthKind::Dir));
        }
        self.entries.insert(path.to_string(), (mode, kind));
    }

    /// Writes the tree as a tar into `out`.
    pub(crate) fn write<W: Write>(&self, out: W) -> Result<W, ImageError> {
        let wrap =
            |e: io::Error| ImageError::io("cannot write a layer tar", Path::new("(synthetic layer)"), e);
        let mut builder = tar::Builder::new(out);
        for (path, (mode, kind)) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(FIXED_MTIME);
            match kind {
                SynthKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    builder
                        .append_data(&mut h, format!("{path}/"), io::empty())
                        .map_err(wrap)?;
                }
                SynthKind::Bytes(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    builder.append_data(&mut h, path, &data[..]).map_err(wrap)?;
                }
                SynthKind::FileFrom(src) => {
                    let file = File::open(src).map_err(ImageError::io_at("cannot open", src))?;
                    let len = file
                        .metadata()
                        .map_err(ImageError::io_at("cannot inspect", src))?
                        .len();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(len);
                    builder
                        .append_data(&mut h, path, io::Read::take(file, len))
                        .map_err(ImageError::io_at("cannot read", src))?;
                }
                SynthKind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    builder.append_link(&mut h, path, target).map_err(wrap)?;
                }
            }
        }
        builder.into_inner().map_err(wrap)
    }
}

/// Writes the tree under `root` as a tar into `out`: entries sorted by name, owners, modes and
/// mtimes as on disk, hard links as link entries, sockets skipped; device nodes and FIFOs kept
/// if `devices` allows them, else refused (0/0 whiteouts are always kept). Files are read only
/// if regular, and only as far as their size. The root directory itself is not an entry.
pub(crate) fn write_dir<W: Write>(root: &Path, out: W, devices: DevicePolicy) -> Result<W, ImageError> {
    let mut walker = DirTar {
        root,
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        devices,
    };
    walker.walk(Path::new(""))?;
    walker
        .builder
        .into_inner()
        .map_err(|e| ImageError::io("cannot write a layer tar of", root, e))
}

struct DirTar<'a, W: Write> {
    root: &'a Path,
    builder: tar::Builder<W>,
    /// (dev, inode) of multiply-linked files already written, to their archive path.
    links: HashMap<(u64, u64), PathBuf>,
    devices: DevicePolicy,
}

impl<W: Write> DirTar<'_, W> {
    fn walk(&mut self, rel: &Path) -> Result<(), ImageError> {
        let dir = self.root.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(ImageError::io_at("cannot read directory", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(ImageError::io_at("cannot read directory", &dir))?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let path = self.root.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(ImageError::io_at("cannot inspect", &path))?;
            let ft = meta.file_type();
            let mut h = tar::Header::new_gnu();
            h.set_mode(meta.mode() & 0o7777);
            h.set_uid(u64::from(meta.uid()));
            h.set_gid(u64::from(meta.gid()));
            h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
            h.set_size(0);
            let err = |e| ImageError::io("cannot add to the layer tar", &path, e);
            if ft.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                self.builder.append_data(&mut h, &rel, io::empty()).map_err(err)?;
                self.walk(&rel)?;
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        h.set_entry_type(tar::EntryType::Link);
                        let first = first.clone();
                        self.builder.append_link(&mut h, &rel, &first).map_err(err)?;
                        continue;
                    }
                    self.links.insert(key, rel.clone());
                }
                let what = format!("{}: file {}", self.root.display(), rel.display());
                let Regular { file, size } = open_regular(&path, &what)?
                    .ok_or_else(|| ImageError::io("cannot open", &path, io::ErrorKind::NotFound.into()))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(size);
                // Exactly `size` bytes: a file that grows or shrinks while read cannot corrupt
                // the tar.
                self.builder
                    .append_data(&mut h, &rel, ExactLen::new(file, size))
                    .map_err(err)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(ImageError::io_at("cannot read symlink", &path))?;
                h.set_entry_type(tar::EntryType::Symlink);
                self.builder.append_link(&mut h, &rel, &target).map_err(err)?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let special = devices::file_special(ft, meta.rdev()).map(|kind| SpecialEntry {
                    entry: rel.display().to_string(),
                    kind,
                });
                devices::check(self.devices, &self.root.display().to_string(), special.as_ref())?;
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Fifo
                };
                h.set_entry_type(kind);
                let rdev = meta.rdev();
                h.set_device_major(libc::major(rdev)).map_err(err)?;
                h.set_device_minor(libc::minor(rdev)).map_err(err)?;
                self.builder.append_data(&mut h, &rel, io::empty()).map_err(err)?;
            }
            // Sockets are not content: skipped.
        }
        Ok(())
    }
}
