//! Reading layer tar streams safely: compression detection by magic bytes, and a reader that
//! hashes the uncompressed stream (the layer's diff_id) while checking its tar framing
//! independently of the `tar` crate, so that an archive cut anywhere — mid-entry or exactly at a
//! 512-byte header boundary — is refused instead of read as a shorter, valid-looking archive.

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use crate::devices::{self, SpecialEntry};
use crate::error::ImageError;

const BLOCK: usize = 512;
/// The largest PAX extended header accepted (they hold a few paths and attributes).
const MAX_PAX: u64 = 1 << 20;

/// How a layer blob or tarball is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

/// Detects the compression of `path` from its first bytes; zstd is refused with the reason.
pub(crate) fn sniff(path: &Path, what: &str) -> Result<Compression, ImageError> {
    let mut file = File::open(path).map_err(ImageError::io_at("cannot open", path))?;
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        let got = file
            .read(&mut magic[n..])
            .map_err(ImageError::io_at("cannot read", path))?;
        if got == 0 {
            break;
        }
        n += got;
    }
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        return Ok(Compression::Gzip);
    }
    if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        return Err(zstd_unsupported(what));
    }
    Ok(Compression::None)
}

/// The error for a zstd-compressed layer or tarball.
pub(crate) fn zstd_unsupported(what: &str) -> ImageError {
    ImageError::Unsupported {
        what: format!("{what}: zstd compression"),
        remedy: "decompress it (`zstd -d`) or re-export the image with gzip or uncompressed layers".into(),
    }
}

/// What reading a whole layer stream established.
#[derive(Debug, Clone)]
pub(crate) struct StreamFacts {
    /// Hex SHA-256 of the uncompressed tar stream (the layer's diff_id).
    pub diff_hex: String,
}

/// Top-level file names that mark a tarball as an image archive rather than a root file system.
pub(crate) const ARCHIVE_MARKERS: [&str; 3] = ["manifest.json", "oci-layout", "index.json"];

/// The largest marker file read to tell an image archive from a root file system.
pub(crate) const MAX_MARKER: u64 = 4 << 20;

/// Whether the content of a top-level marker file is what an image archive has there (a root
/// file system may well hold an unrelated `manifest.json` or `index.json`).
pub(crate) fn looks_like_marker(name: &str, content: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(content) else {
        return false;
    };
    match name {
        "manifest.json" => json
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(|e| e.get("Config").is_some() && e.get("Layers").is_some()),
        "oci-layout" => json.get("imageLayoutVersion").is_some(),
        "index.json" => json.get("manifests").is_some(),
        _ => false,
    }
}

/// What verifying a layer stream established.
#[derive(Debug, Clone)]
pub(crate) struct LayerScan {
    pub facts: StreamFacts,
    /// Which of [`ARCHIVE_MARKERS`] are regular files at the top of the archive.
    pub markers: Vec<&'static str>,
    /// The first device node or FIFO entry (whiteouts, 0/0 character devices, aside).
    pub special: Option<SpecialEntry>,
}

/// A reader over the uncompressed tar stream of a file that hashes it and checks its framing.
pub(crate) struct TarStream {
    inner: Box<dyn Read>,
    hasher: Sha256,
    framer: Framer,
    what: String,
}

impl TarStream {
    /// Opens `path` (plain or gzip tar, by magic bytes); `what` names it in errors.
    pub(crate) fn open(path: &Path, what: &str) -> Result<TarStream, ImageError> {
        let compression = sniff(path, what)?;
        let file = File::open(path).map_err(ImageError::io_at("cannot open", path))?;
        let inner: Box<dyn Read> = match compression {
            Compression::None => Box::new(BufReader::with_capacity(1 << 16, file)),
            Compression::Gzip => Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file))),
        };
        Ok(TarStream {
            inner,
            hasher: Sha256::new(),
            framer: Framer::default(),
            what: what.to_string(),
        })
    }

    /// Reads what is left, then checks the archive reached its end-of-archive marker.
    pub(crate) fn finish(mut self) -> Result<StreamFacts, ImageError> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| self.read_error(e))?;
        self.framer
            .finish()
            .map_err(|reason| ImageError::corrupt(self.what.clone(), reason))?;
        Ok(StreamFacts {
            diff_hex: format!("{:x}", self.hasher.finalize()),
        })
    }

    /// Explains `err`, met by the `tar` crate part-way through the stream, by reading on: the
    /// framing check usually says more precisely what is wrong (truncation, a bad header).
    pub(crate) fn diagnose(mut self, err: ImageError) -> ImageError {
        if let Err(e) = io::copy(&mut self, &mut io::sink()) {
            return self.read_error(e);
        }
        match self.framer.finish() {
            Err(reason) => ImageError::corrupt(self.what.clone(), reason),
            Ok(()) => err,
        }
    }

    /// Turns an error met while reading the stream into the error naming the input.
    pub(crate) fn read_error(&self, err: io::Error) -> ImageError {
        ImageError::corrupt(self.what.clone(), describe_read_error(&err))
    }
}

/// Words for an error from reading a (possibly gzip) tar stream.
pub(crate) fn describe_read_error(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => format!("it is truncated ({err})"),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => format!("{err}"),
        _ => format!("read failed: {err}"),
    }
}

impl Read for TarStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            // flate2 reports a corrupt deflate stream as InvalidInput/InvalidData; say it is gzip.
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(io::ErrorKind::UnexpectedEof, "the compressed stream ends early")
            } else if matches!(e.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData) {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad gzip stream: {e}"))
            } else {
                e
            }
        })?;
        self.hasher.update(&buf[..n]);
        if let Err(reason) = self.framer.feed(&buf[..n]) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
        }
        Ok(n)
    }
}

/// Walks the 512-byte block structure of a tar stream: headers, their (padded) data, PAX size
/// overrides, and the two zero blocks that end the archive.
#[derive(Default)]
struct Framer {
    header: Vec<u8>,
    /// Bytes of entry data (including padding) still to pass.
    skip: u64,
    /// PAX header data still to collect, and what has been collected.
    pax_left: u64,
    pax: Vec<u8>,
    /// A `size` from a PAX header, applying to the next entry.
    size_override: Option<u64>,
    zero_blocks: u32,
    ended: bool,
    entries: u64,
    offset: u64,
    /// The first framing error.
    failed: Option<String>,
}

impl Framer {
    /// Takes in the next bytes of the stream; the first framing error sticks.
    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.feed_inner(data)
            .inspect_err(|e| self.failed = Some(e.clone()))
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() && !self.ended {
            if self.pax_left > 0 {
                let take = (self.pax_left.min(data.len() as u64)) as usize;
                self.pax.extend_from_slice(&data[..take]);
                self.pax_left -= take as u64;
                self.skip -= take as u64;
                data = &data[take..];
                self.offset += take as u64;
                if self.pax_left == 0 {
                    self.size_override = pax_size(&self.pax)?;
                }
                continue;
            }
            if self.skip > 0 {
                let take = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= take as u64;
                data = &data[take..];
                self.offset += take as u64;
                continue;
            }
            let want = BLOCK - self.header.len();
            let take = want.min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.offset += take as u64;
            if self.header.len() == BLOCK {
                let block = std::mem::take(&mut self.header);
                self.header_block(&block)?;
            }
        }
        Ok(())
    }

    fn header_block(&mut self, block: &[u8]) -> Result<(), String> {
        let at = self.offset - BLOCK as u64;
        if block.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks == 2 {
                self.ended = true;
            }
            return Ok(());
        }
        if self.zero_blocks > 0 {
            return Err(format!(
                "a lone zero block at offset {} is followed by more entries (concatenated archives are not supported)",
                at - BLOCK as u64
            ));
        }
        let stored = parse_octal(&block[148..156]).ok_or_else(|| {
            format!("the tar header at offset {at} has an unreadable checksum: not a tar archive?")
        })?;
        let sum: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    0x20
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if sum != stored {
            return Err(format!(
                "the tar header at offset {at} has a bad checksum: not a tar archive, or corrupt"
            ));
        }
        let typeflag = block[156];
        let header_size = parse_size(&block[124..136])
            .ok_or_else(|| format!("the tar header at offset {at} has an unreadable size"))?;
        let size = match typeflag {
            // Extension headers describe the next entry; a PAX size applies to that one only.
            b'x' | b'g' | b'L' | b'K' => header_size,
            _ => self.size_override.take().unwrap_or(header_size),
        };
        self.entries += 1;
        self.skip = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        if typeflag == b'x' {
            if size > MAX_PAX {
                return Err(format!(
                    "the PAX header at offset {at} is {size} bytes, more than accepted"
                ));
            }
            self.pax.clear();
            self.pax_left = size;
            if size == 0 {
                self.size_override = None;
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.ended {
            return Ok(());
        }
        let mid_entry = !self.header.is_empty() || self.skip > 0 || self.pax_left > 0;
        Err(if self.offset == 0 {
            "it is empty (not even an end-of-archive marker)".to_string()
        } else if self.entries == 0 && self.zero_blocks == 0 {
            format!(
                "it is not a tar archive (its {} bytes hold no complete tar header)",
                self.offset
            )
        } else if mid_entry {
            format!(
                "it is truncated: the stream ends in the middle of an entry after {} bytes",
                self.offset
            )
        } else if self.zero_blocks == 1 {
            format!(
                "it is truncated: the stream ends after {} bytes with only one of the two end-of-archive zero blocks",
                self.offset
            )
        } else {
            format!(
                "it is truncated: the stream ends after {} bytes, at an entry boundary, before the end-of-archive marker",
                self.offset
            )
        })
    }
}

/// An octal header field (NUL/space padded).
fn parse_octal(field: &[u8]) -> Option<u64> {
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let s = std::str::from_utf8(&s).ok()?;
    u64::from_str_radix(s, 8).ok()
}

/// A size field: octal, or GNU base-256 when the top bit of the first byte is set.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    parse_octal(field)
}

/// The `size` record of a PAX extended header, if any.
fn pax_size(data: &[u8]) -> Result<Option<u64>, String> {
    let mut rest = data;
    let mut size = None;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= space || len > rest.len() {
            return Err("malformed PAX record length".into());
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(v) = record.strip_prefix(b"size=") {
            let v = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("malformed PAX size")?;
            size = Some(v);
        }
        rest = &rest[len..];
    }
    Ok(size)
}

/// Turns a tar entry path into a path of plain components relative to the layer root (empty for
/// the root itself); refuses absolute paths and `..`.
pub(crate) fn relative_entry_path(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return Err("it climbs out of the layer with `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("it is an absolute path".into()),
        }
    }
    Ok(out)
}

/// The first symlink (of `symlinks`) among the directories above `path`.
fn symlink_above(symlinks: &std::collections::HashSet<PathBuf>, path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|a| symlinks.contains(*a))
        .map(Path::to_path_buf)
}

/// The entry as a [`SpecialEntry`] if it is a device node or FIFO.
fn special_entry<R: Read>(entry: &tar::Entry<'_, R>, raw: &Path) -> Option<SpecialEntry> {
    let header = entry.header();
    let major = header.device_major().ok().flatten().unwrap_or(0);
    let minor = header.device_minor().ok().flatten().unwrap_or(0);
    devices::tar_special(header.entry_type(), major, minor).map(|kind| SpecialEntry {
        entry: raw.display().to_string(),
        kind,
    })
}

/// Reads a whole layer stream through the `tar` crate, checking every entry path, and returns
/// its diff_id and uncompressed size. Used to verify layers and tarballs while importing.
pub(crate) fn verify_layer(path: &Path, what: &str) -> Result<LayerScan, ImageError> {
    let stream = TarStream::open(path, what)?;
    let mut archive = tar::Archive::new(stream);
    let mut markers = Vec::new();
    let mut special = None;
    // Symlinks declared so far: nothing may be written through one.
    let mut symlinks: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let outcome = (|| -> Result<(), ImageError> {
        let entries = archive
            .entries()
            .map_err(|e| ImageError::corrupt(what, describe_read_error(&e)))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ImageError::corrupt(what, describe_read_error(&e)))?;
            let raw = entry
                .path()
                .map_err(|e| ImageError::corrupt(what, format!("bad entry path: {e}")))?
                .into_owned();
            let rel = relative_entry_path(&raw).map_err(|reason| ImageError::UnsafeEntry {
                what: what.to_string(),
                entry: raw.display().to_string(),
                reason,
            })?;
            if let Some(link) = symlink_above(&symlinks, &rel) {
                return Err(ImageError::UnsafeEntry {
                    what: what.to_string(),
                    entry: raw.display().to_string(),
                    reason: format!("it would be written through the symlink {}", link.display()),
                });
            }
            if special.is_none() {
                special = special_entry(&entry, &raw);
            }
            if entry.header().entry_type().is_symlink() {
                symlinks.insert(rel.clone());
            } else {
                symlinks.remove(&rel);
            }
            let marker = ARCHIVE_MARKERS
                .iter()
                .find(|m| rel.as_os_str() == **m && entry.header().entry_type().is_file())
                .filter(|_| entry.size() <= MAX_MARKER)
                .copied();
            if entry.header().entry_type().is_hard_link() {
                if let Some(target) = entry.link_name().ok().flatten() {
                    let target_rel =
                        relative_entry_path(&target).map_err(|reason| ImageError::UnsafeEntry {
                            what: what.to_string(),
                            entry: raw.display().to_string(),
                            reason: format!("its hard-link target {}: {reason}", target.display()),
                        })?;
                    if symlink_above(&symlinks, &target_rel).is_some() || symlinks.contains(&target_rel) {
                        return Err(ImageError::UnsafeEntry {
                            what: what.to_string(),
                            entry: raw.display().to_string(),
                            reason: format!(
                                "its hard-link target {} is or goes through a symlink",
                                target.display()
                            ),
                        });
                    }
                }
            }
            let expected = entry.size();
            let mut content = Vec::new();
            let got = match marker {
                Some(_) => io::copy(&mut entry, &mut content),
                None => io::copy(&mut entry, &mut io::sink()),
            }
            .map_err(|e| ImageError::corrupt(what, describe_read_error(&e)))?;
            if let Some(m) = marker.filter(|m| looks_like_marker(m, &content)) {
                markers.push(m);
            }
            if got != expected {
                return Err(ImageError::corrupt(
                    what,
                    format!(
                        "it is truncated inside entry {} ({got} of {expected} bytes)",
                        raw.display()
                    ),
                ));
            }
        }
        Ok(())
    })();
    let stream = archive.into_inner();
    match outcome {
        Ok(()) => Ok(LayerScan {
            facts: stream.finish()?,
            markers,
            special,
        }),
        Err(e @ ImageError::Corrupt { .. }) => Err(stream.diagnose(e)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(700);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "a", &[7u8; 700][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "b", &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn frame(data: &[u8]) -> Result<(), String> {
        let mut f = Framer::default();
        // Feed in odd-sized pieces to exercise the state machine across boundaries.
        for chunk in data.chunks(77) {
            f.feed(chunk)?;
        }
        f.finish()
    }

    #[test]
    fn complete_archive_is_accepted() {
        assert_eq!(frame(&tar_bytes()), Ok(()));
    }

    #[test]
    fn every_cut_is_refused() {
        let full = tar_bytes();
        // Every block boundary before the second zero block, and a few mid-block cuts.
        let end = full.len() - full.iter().rev().take_while(|&&b| b == 0).count();
        let end_marker = end.div_ceil(512) * 512 + 1024;
        for cut in (0..end_marker).step_by(512).chain([100, 600, 1500]) {
            assert!(frame(&full[..cut]).is_err(), "cut at {cut} accepted");
        }
        assert!(frame(&full[..end_marker]).is_ok());
    }

    #[test]
    fn bad_checksum_is_refused() {
        let mut full = tar_bytes();
        full[10] ^= 1;
        let err = frame(&full).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn paths_are_confined() {
        assert_eq!(relative_entry_path(Path::new("./a/b")), Ok(PathBuf::from("a/b")));
        assert_eq!(relative_entry_path(Path::new("./")), Ok(PathBuf::new()));
        assert!(relative_entry_path(Path::new("/etc/passwd")).is_err());
        assert!(relative_entry_path(Path::new("a/../../b")).is_err());
    }

    #[test]
    fn pax_size_is_read() {
        assert_eq!(pax_size(b"12 size=100\n21 path=aaaaaaaaaaaa\n"), Ok(Some(100)));
        assert!(pax_size(b"99 size=1\n").is_err());
    }
}
