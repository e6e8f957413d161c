//! SHA-256 content addresses: hashing readers and writers, and parsing `sha256:<hex>` digests.

use sha2::{Digest as _, Sha256};
use std::io::{self, Write};

use crate::error::ImageError;

/// Lowercase hex of a SHA-256 hash: the part after `sha256:`.
pub(crate) fn hex_of(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// `sha256:<hex>`.
pub(crate) fn prefixed(hex: &str) -> String {
    format!("sha256:{hex}")
}

/// The hex of a `sha256:<hex>` digest, checked to be 64 lowercase hex digits; `what` names the
/// digest's owner in the error.
pub(crate) fn parse_sha256(digest: &str, what: &str) -> Result<String, ImageError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| ImageError::Unsupported {
            what: format!("{what}: digest {digest:?}"),
            remedy: "only sha256 digests are supported; re-export the image with sha256 digests".into(),
        })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ImageError::corrupt(what, format!("malformed digest {digest:?}")));
    }
    Ok(hex.to_string())
}

/// A writer that hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Returns (inner writer, hex, bytes written).
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, format!("{:x}", self.hasher.finalize()), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
