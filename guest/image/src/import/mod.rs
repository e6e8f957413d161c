//! `import`: recognises what it was given — a root file system directory or tarball, an OCI
//! image layout (directory or archive), a `docker save` tarball — and stages a verified image
//! from it. Nothing here touches the store; [`crate::commit`] does, once all is verified.

pub(crate) mod docker;
pub(crate) mod oci;
pub(crate) mod rootfs;
pub(crate) mod source;
pub(crate) mod staging;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::devices::DevicePolicy;
use crate::error::ImageError;
use crate::layout::Layout;
use crate::name;
use crate::regular;
use crate::tarstream;
use crate::ImportOptions;
use source::Source;
use staging::{StagedImage, Staging};

const KINDS: &str = "give a root file system directory or tarball (.tar, .tar.gz), an OCI image layout \
                     directory, or a `docker save` tarball";

/// Verifies `path` and stages an image from it, named as `options` say or after what the
/// input says.
pub(crate) fn stage(
    layout: &Layout,
    path: &Path,
    options: &ImportOptions,
) -> Result<StagedImage, ImageError> {
    let name = options.name.as_deref();
    if let Some(n) = name {
        name::validate(n)?;
    }
    let (real, meta) = inspect_input(path)?;
    let fallback = name::from_path(path);
    let staging = Staging::new(layout, DevicePolicy::from_allow(options.allow_devices))?;
    let staged = if meta.is_dir() {
        stage_dir(staging, &real, path, name, fallback)?
    } else if meta.is_file() {
        stage_file(staging, &real, path, name, fallback)?
    } else {
        return Err(ImageError::BadInput {
            path: path.to_path_buf(),
            reason: format!(
                "it is {}, not a regular file or a directory: {KINDS}",
                regular::kind_of(meta.file_type())
            ),
        });
    };
    name::validate(&staged.name).map_err(|e| match e {
        ImageError::InvalidName { name, reason } => ImageError::InvalidName {
            name,
            reason: format!("{reason} (taken from {}); choose one with --name", path.display()),
        },
        other => other,
    })?;
    Ok(staged)
}

/// The input with every symlink resolved (the user may well name a link to their tarball), and
/// what it is.
fn inspect_input(path: &Path) -> Result<(PathBuf, fs::Metadata), ImageError> {
    let real = fs::canonicalize(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => ImageError::BadInput {
            path: path.to_path_buf(),
            reason: format!("it does not exist: {KINDS}"),
        },
        _ => ImageError::io("cannot inspect", path, e),
    })?;
    let meta = fs::symlink_metadata(&real).map_err(ImageError::io_at("cannot inspect", &real))?;
    Ok((real, meta))
}

/// A directory: an OCI layout, an unpacked `docker save`, or a root file system.
fn stage_dir(
    staging: Staging,
    dir: &Path,
    input: &Path,
    name: Option<&str>,
    fallback: String,
) -> Result<StagedImage, ImageError> {
    let src = Source::dir(dir, input);
    if dir_has_marker(dir, "oci-layout") {
        oci::import(staging, &src, name, fallback)
    } else if dir_has_marker(dir, "manifest.json") {
        docker::import(staging, &src, name, fallback)
    } else {
        rootfs::import_dir(staging, dir, input, name.map(str::to_string).unwrap_or(fallback))
    }
}

/// A tarball: an OCI archive, a `docker save`, or a root file system.
fn stage_file(
    staging: Staging,
    file: &Path,
    input: &Path,
    name: Option<&str>,
    fallback: String,
) -> Result<StagedImage, ImageError> {
    let what = input.display().to_string();
    eprintln!("importing {what}: reading and verifying...");
    let layer = staging.put_tarball(file, &what).map_err(|e| match e {
        // A file that is not a tar at all deserves the list of what import reads.
        ImageError::Corrupt { what, reason } if reason.contains("not a tar archive") => {
            ImageError::BadInput {
                path: input.to_path_buf(),
                reason: format!("{reason} ({what}): {KINDS}"),
            }
        }
        other => other,
    })?;
    let is_docker = layer.markers.contains(&"manifest.json");
    let is_oci = layer.markers.contains(&"oci-layout") && layer.markers.contains(&"index.json");
    if !is_docker && !is_oci {
        return rootfs::import_tarball(
            staging,
            layer,
            &what,
            name.map(str::to_string).unwrap_or(fallback),
        );
    }
    let archive = staging.blob_path(&layer.blob.hex);
    let src = Source::unpack(&archive, &staging.scratch("archive"), input)?;
    // The archive itself is not a blob of the image.
    fs::remove_file(&archive).map_err(ImageError::io_at("cannot remove", &archive))?;
    if is_docker {
        docker::import(staging, &src, name, fallback)
    } else {
        oci::import(staging, &src, name, fallback)
    }
}

/// Whether `dir` holds the image-archive file `name` with the content such a file has (a root
/// file system may hold an unrelated `manifest.json`).
/// Only a regular file counts: a marker that is a link, FIFO or device is not read.
fn dir_has_marker(dir: &Path, name: &str) -> bool {
    let path = dir.join(name);
    matches!(
        regular::read_regular(&path, name, tarstream::MAX_MARKER),
        Ok(Some(c)) if tarstream::looks_like_marker(name, &c)
    )
}
