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
use std::path::Path;

use crate::error::ImageError;
use crate::layout::Layout;
use crate::name;
use crate::tarstream;
use source::Source;
use staging::{StagedImage, Staging};

const KINDS: &str = "give a root file system directory or tarball (.tar, .tar.gz), an OCI image layout \
                     directory, or a `docker save` tarball";

/// Verifies `path` and stages an image from it, named `name` or after what the input says.
pub(crate) fn stage(layout: &Layout, path: &Path, name: Option<&str>) -> Result<StagedImage, ImageError> {
    if let Some(n) = name {
        name::validate(n)?;
    }
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => ImageError::BadInput {
            path: path.to_path_buf(),
            reason: format!("it does not exist: {KINDS}"),
        },
        _ => ImageError::io("cannot inspect", path, e),
    })?;
    let fallback = name::from_path(path);
    let staging = Staging::new(layout)?;
    let staged = if meta.is_dir() {
        let src = Source::dir(path);
        if dir_has_marker(path, "oci-layout") {
            oci::import(staging, &src, name, fallback)?
        } else if dir_has_marker(path, "manifest.json") {
            docker::import(staging, &src, name, fallback)?
        } else {
            rootfs::import_dir(staging, path, name.map(str::to_string).unwrap_or(fallback))?
        }
    } else if meta.is_file() {
        let what = path.display().to_string();
        eprintln!("importing {what}: reading and verifying...");
        let layer = staging.put_layer(path, &what, None, None).map_err(|e| match e {
            // A file that is not a tar at all deserves the list of what import reads.
            ImageError::Corrupt { what, reason } if reason.contains("not a tar archive") => {
                ImageError::BadInput {
                    path: path.to_path_buf(),
                    reason: format!("{reason} ({what}): {KINDS}"),
                }
            }
            other => other,
        })?;
        let is_docker = layer.markers.contains(&"manifest.json");
        let is_oci = layer.markers.contains(&"oci-layout") && layer.markers.contains(&"index.json");
        if is_docker || is_oci {
            let archive = staging.blob_path(&layer.blob.hex);
            let src = Source::unpack(&archive, &staging.scratch("archive"), path)?;
            // The archive itself is not a blob of the image.
            fs::remove_file(&archive).map_err(ImageError::io_at("cannot remove", &archive))?;
            if is_docker {
                docker::import(staging, &src, name, fallback)?
            } else {
                oci::import(staging, &src, name, fallback)?
            }
        } else {
            rootfs::import_tarball(staging, layer, name.map(str::to_string).unwrap_or(fallback))?
        }
    } else {
        return Err(ImageError::BadInput {
            path: path.to_path_buf(),
            reason: format!("it is neither a file nor a directory: {KINDS}"),
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

/// Whether `dir` holds the image-archive file `name` with the content such a file has (a root
/// file system may hold an unrelated `manifest.json`).
fn dir_has_marker(dir: &Path, name: &str) -> bool {
    let path = dir.join(name);
    fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() <= tarstream::MAX_MARKER)
        && fs::read(&path).is_ok_and(|c| tarstream::looks_like_marker(name, &c))
}
