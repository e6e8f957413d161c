//! Each VM's own writable copy of a shared base disk, made cheaply: a reflink (FICLONE) where
//! the filesystem can share blocks, else a sparse copy that copies only the data regions
//! (SEEK_DATA/SEEK_HOLE) and leaves holes and all-zero blocks as holes.

use crate::DiskError;
use nix::unistd::{lseek, Whence};
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How a writable copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// The copy shares the base's blocks until written (copy-on-write).
    Reflink,
    /// Only the base's non-zero data was copied; the rest is holes.
    Sparse,
}

/// `FICLONE` from linux/fs.h: `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;
/// Copy granularity; a chunk of zeros in a data region is left as a hole.
const CHUNK: usize = 64 * 1024;

/// Makes `dest` (which must not exist) a writable copy of `base`, mode 0644.
pub fn writable_copy(base: &Path, dest: &Path) -> Result<CopyKind, DiskError> {
    let src = File::open(base).map_err(|e| DiskError::io("cannot open base disk", base, e))?;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dest)
        .map_err(|e| DiskError::io("cannot create disk copy", dest, e))?;
    let result = copy_into(&src, base, &out, dest);
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

fn copy_into(src: &File, base: &Path, out: &File, dest: &Path) -> Result<CopyKind, DiskError> {
    if reflink(src, out) {
        return Ok(CopyKind::Reflink);
    }
    let len = src
        .metadata()
        .map_err(|e| DiskError::io("cannot stat", base, e))?
        .len();
    out.set_len(len)
        .map_err(|e| DiskError::io("cannot size", dest, e))?;
    let mut buf = vec![0u8; CHUNK];
    for (start, end) in data_regions(src, len) {
        let mut offset = start;
        while offset < end {
            let want = (end - offset).min(CHUNK as u64) as usize;
            let chunk = &mut buf[..want];
            src.read_exact_at(chunk, offset)
                .map_err(|e| DiskError::io("cannot read", base, e))?;
            if chunk.iter().any(|&b| b != 0) {
                out.write_all_at(chunk, offset)
                    .map_err(|e| DiskError::io("cannot write", dest, e))?;
            }
            offset += want as u64;
        }
    }
    out.sync_all()
        .map_err(|e| DiskError::io("cannot sync", dest, e))?;
    Ok(CopyKind::Sparse)
}

/// Tries to clone `src`'s blocks into `out`; false where the filesystem cannot.
fn reflink(src: &File, out: &File) -> bool {
    // SAFETY: FICLONE takes the source descriptor as its integer argument; both descriptors are
    // open for the duration of the call and the kernel reads no memory of ours.
    let rc = unsafe { libc::ioctl(out.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    rc == 0
}

/// The `[start, end)` data regions of `file`; the whole file if SEEK_DATA is not supported.
fn data_regions(file: &File, len: u64) -> Vec<(u64, u64)> {
    let mut regions = Vec::new();
    let mut pos: i64 = 0;
    let end = len as i64;
    while pos < end {
        let start = match lseek(file, pos, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(_) => return vec![(0, len)],
        };
        let hole = match lseek(file, start, Whence::SeekHole) {
            Ok(h) => h,
            Err(_) => return vec![(0, len)],
        };
        regions.push((start as u64, hole as u64));
        pos = hole;
    }
    regions
}

/// One VM's writable copy of a base disk, removed when dropped unless [`VmDisk::keep`] is called.
#[derive(Debug)]
pub struct VmDisk {
    path: PathBuf,
    kind: CopyKind,
    keep: bool,
}

impl VmDisk {
    /// Makes `dest` a writable copy of `base` owned by the returned value.
    pub fn create(base: &Path, dest: &Path) -> Result<Self, DiskError> {
        let kind = writable_copy(base, dest)?;
        Ok(VmDisk {
            path: dest.to_path_buf(),
            kind,
            keep: false,
        })
    }

    /// The copy's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the copy was made.
    pub fn kind(&self) -> CopyKind {
        self.kind
    }

    /// Keeps the file after this value is dropped and returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for VmDisk {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}
