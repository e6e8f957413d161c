//! The guest layer: the topmost layer of every resolved image, holding the static guest program
//! at `/usr/bin/sandbox-guest`. It is a deterministic tar (fixed mtime, owner root, mode 0755)
//! unpacked once under `layers/guest/<sha256 of the tar>/`, so a rebuilt guest program is
//! picked up without re-importing any image. The hash of a given binary is remembered by its
//! (device, inode, size, mtime) under `layers/guest/.by-stat/`, so resolving does not re-read
//! an unchanged binary.

use std::fs::{self, File};
use std::io::BufWriter;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::digest::HashingWriter;
use crate::error::ImageError;
use crate::layout::{write_atomic, Layout};
use crate::tarwrite::{SynthKind, SynthTree};
use crate::unpack::unpack_layer;

/// The unpacked guest layer for `binary`, made if needed.
pub(crate) fn guest_layer(layout: &Layout, binary: &Path) -> Result<PathBuf, ImageError> {
    let meta = fs::metadata(binary).map_err(|e| {
        ImageError::GuestBinary(format!(
            "{}: {e}: build it with `cargo build` or set {}",
            binary.display(),
            sandbox_protocol::paths::GUEST_BIN_ENV
        ))
    })?;
    if !meta.is_file() {
        return Err(ImageError::GuestBinary(format!(
            "{} is not a file",
            binary.display()
        )));
    }
    let stat_dir = layout.guest_layers.join(".by-stat");
    let stat_key = format!(
        "{}-{}-{}-{}.{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let stat_file = stat_dir.join(&stat_key);
    if let Ok(hex) = fs::read_to_string(&stat_file) {
        let dir = layout.guest_layers.join(hex.trim());
        if dir.is_dir() {
            return Ok(dir);
        }
    }

    let mut tree = SynthTree::default();
    tree.add(
        sandbox_protocol::GUEST_PATH_IN_IMAGE,
        0o755,
        SynthKind::FileFrom(binary.to_path_buf()),
    );
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-guest-")
        .suffix(".tar")
        .tempfile_in(&layout.guest_layers)
        .map_err(ImageError::io_at(
            "cannot create a temporary file in",
            &layout.guest_layers,
        ))?;
    let file = File::create(tmp.path()).map_err(ImageError::io_at("cannot write", tmp.path()))?;
    let w = tree.write(HashingWriter::new(BufWriter::new(file)))?;
    let (buf, hex, _) = w.finish();
    buf.into_inner()
        .map_err(|e| ImageError::io("cannot write", tmp.path(), e.into_error()))?;
    let what = format!("the guest layer for {}", binary.display());
    let dir = unpack_layer(tmp.path(), &hex, &layout.guest_layers, &what)?;
    crate::private::create_dir_all(&stat_dir)?;
    write_atomic(&stat_file, hex.as_bytes())?;
    Ok(dir)
}
