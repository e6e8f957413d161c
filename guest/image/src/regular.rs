//! Opening and reading the files import expects to be regular files — the user's tarball, the
//! members of a directory or an unpacked archive, OCI blobs — without being fooled into reading
//! a FIFO (which blocks forever), a device (`/dev/zero` never ends) or whatever a symlink points
//! at, and copying them only as far as their declared size.

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::fs::{self, File, FileType, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::ImageError;

/// The largest JSON file (manifest.json, index.json, a manifest or config) read into memory.
pub(crate) const MAX_METADATA: u64 = 16 << 20;

/// A regular file opened for reading, and its size when opened.
pub(crate) struct Regular {
    pub file: File,
    pub size: u64,
}

/// How a file type is named in errors: "a FIFO", "a character device"...
pub(crate) fn kind_of(ft: FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Opens `path` if it is a regular file: `None` when it does not exist, an
/// [`ImageError::NotRegular`] naming what it is otherwise. The file is looked at first without
/// following a symlink (so a device is never opened at all), then opened with `O_NOFOLLOW |
/// O_NONBLOCK` (a FIFO swapped in meanwhile cannot block the open), checked again with `fstat`
/// to be the same regular file, and switched back to blocking reads. `what` names it in errors.
pub(crate) fn open_regular(path: &Path, what: &str) -> Result<Option<Regular>, ImageError> {
    let before = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("cannot inspect", path, e)),
    };
    refuse_unless_regular(before.file_type(), path, what)?;
    let file = match open_nofollow_nonblock(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a symlink: it was replaced by one after the check above.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_regular(path, what, "a symbolic link"))
        }
        Err(e) => return Err(ImageError::io("cannot open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(ImageError::io_at("cannot inspect", path))?;
    refuse_unless_regular(meta.file_type(), path, what)?;
    if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
        return Err(ImageError::BadInput {
            path: path.to_path_buf(),
            reason: format!(
                "{what}: it was replaced while being opened; leave the input alone while it is imported"
            ),
        });
    }
    clear_nonblock(&file).map_err(ImageError::io_at("cannot set blocking reads on", path))?;
    Ok(Some(Regular {
        file,
        size: meta.len(),
    }))
}

fn open_nofollow_nonblock(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

fn clear_nonblock(file: &File) -> io::Result<()> {
    let flags = fcntl(file, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(file, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

fn refuse_unless_regular(ft: FileType, path: &Path, what: &str) -> Result<(), ImageError> {
    if ft.is_file() {
        Ok(())
    } else {
        Err(not_regular(path, what, kind_of(ft)))
    }
}

fn not_regular(path: &Path, what: &str, kind: &'static str) -> ImageError {
    ImageError::NotRegular {
        what: what.to_string(),
        path: path.to_path_buf(),
        kind,
    }
}

/// Copies `size` bytes from `reader` into `writer`, reading at most `size + 1`: returns how
/// many arrived (`size + 1` means more than `size` were there). Never reads an unbounded stream.
pub(crate) fn copy_sized(reader: impl Read, writer: &mut dyn Write, size: u64) -> io::Result<u64> {
    io::copy(&mut reader.take(size.saturating_add(1)), writer)
}

/// Why `got` bytes (from [`copy_sized`]) are not the `size` expected; `None` when they are.
pub(crate) fn size_mismatch(got: u64, size: u64) -> Option<String> {
    if got > size {
        Some(format!("it holds more than the {size} bytes expected"))
    } else if got < size {
        Some(format!("it holds only {got} of the {size} bytes expected"))
    } else {
        None
    }
}

/// The whole content of the regular file `path`, which must hold at most `max` bytes; `None`
/// when it does not exist. `what` names it in errors.
pub(crate) fn read_regular(path: &Path, what: &str, max: u64) -> Result<Option<Vec<u8>>, ImageError> {
    let Some(Regular { file, size }) = open_regular(path, what)? else {
        return Ok(None);
    };
    if size > max {
        return Err(ImageError::corrupt(
            what,
            format!(
                "{} is {size} bytes, more than the {max} accepted for such a file",
                path.display()
            ),
        ));
    }
    read_exactly(file, path, what, size).map(Some)
}

/// The content of the regular file `path`, which its descriptor says is `size` bytes: a file
/// of another size is refused before it is read. `None` when it does not exist.
pub(crate) fn read_declared(path: &Path, what: &str, size: u64) -> Result<Option<Vec<u8>>, ImageError> {
    let Some(Regular { file, size: on_disk }) = open_regular(path, what)? else {
        return Ok(None);
    };
    if on_disk != size {
        return Err(ImageError::corrupt(
            what,
            format!(
                "{} is {on_disk} bytes, its descriptor says {size}",
                path.display()
            ),
        ));
    }
    read_exactly(file, path, what, size).map(Some)
}

/// Reads `size` bytes of `file` (opened from `path`), refusing more or fewer.
fn read_exactly(file: File, path: &Path, what: &str, size: u64) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(MAX_METADATA as usize));
    let got = copy_sized(file, &mut bytes, size).map_err(ImageError::io_at("cannot read", path))?;
    if let Some(reason) = size_mismatch(got, size) {
        return Err(ImageError::corrupt(
            what,
            format!("{} changed while being read: {reason}", path.display()),
        ));
    }
    Ok(bytes)
}

/// A reader that yields exactly `len` bytes of `inner`: an error if it ends sooner (a file that
/// shrank while read), and nothing past `len` (a file that grows).
pub(crate) struct ExactLen<R> {
    inner: R,
    left: u64,
}

impl<R: Read> ExactLen<R> {
    pub(crate) fn new(inner: R, len: u64) -> Self {
        ExactLen { inner, left: len }
    }
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("the file shrank while being read ({} bytes missing)", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_both_ways() {
        let mut out = Vec::new();
        assert_eq!(copy_sized(&b"abcdef"[..], &mut out, 3).unwrap(), 4);
        assert!(size_mismatch(4, 3).unwrap().contains("more than"));
        assert!(size_mismatch(2, 3).unwrap().contains("only 2"));
        assert_eq!(size_mismatch(3, 3), None);
    }

    #[test]
    fn exact_len_refuses_a_short_file_and_stops_at_its_length() {
        let mut out = Vec::new();
        let err = io::copy(&mut ExactLen::new(&b"ab"[..], 3), &mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        let mut out = Vec::new();
        io::copy(&mut ExactLen::new(&b"abcdef"[..], 3), &mut out).unwrap();
        assert_eq!(out, b"abc");
    }

    #[test]
    fn special_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_regular(Path::new("/dev/zero"), "the test input")
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("is a character device, not a regular file"),
            "{err}"
        );
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("link")).unwrap();
        let err = open_regular(&dir.path().join("link"), "x").err().unwrap();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(open_regular(&dir.path().join("none"), "x").unwrap().is_none());
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        let r = open_regular(&dir.path().join("f"), "x").unwrap().unwrap();
        assert_eq!(r.size, 5);
    }
}
