//! Where the files of an image archive are read from: a directory given by the user, or a
//! tarball (`docker save`, an OCI archive) unpacked into the staging area. Paths named inside
//! an archive are resolved without ever leaving it, even through its own symlinks (`docker save`
//! links repeated layers to one another); what they name is read only if it is a regular file.

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::error::ImageError;
use crate::private;
use crate::regular::{read_regular, MAX_METADATA};
use crate::tarstream::TarStream;
use crate::unpack::{self, UnpackAs};

/// A tree of archive files; member paths resolve inside it only.
pub(crate) struct Source {
    root: PathBuf,
    /// The user's input, for error messages.
    pub input: PathBuf,
}

/// How many symlinks a member path may go through.
const MAX_LINKS: usize = 40;

impl Source {
    /// The directory `root`, which the user named as `input`.
    pub(crate) fn dir(root: &Path, input: &Path) -> Source {
        Source {
            root: root.to_path_buf(),
            input: input.to_path_buf(),
        }
    }

    /// Unpacks the archive tarball `tarball` (already verified) into `dest`; a member that is
    /// a device node or FIFO is refused.
    pub(crate) fn unpack(tarball: &Path, dest: &Path, input: &Path) -> Result<Source, ImageError> {
        private::create_dir(dest)?;
        let what = input.display().to_string();
        let stream = TarStream::open(tarball, &what)?;
        unpack::unpack_stream(stream, dest, &what, UnpackAs::Archive)?;
        Ok(Source {
            root: dest.to_path_buf(),
            input: input.to_path_buf(),
        })
    }

    /// The path of the member `rel` (a `/`-separated path inside the archive).
    pub(crate) fn file(&self, rel: &str) -> Result<PathBuf, ImageError> {
        let refuse = |reason: &str| {
            ImageError::BadInput {
            path: self.input.clone(),
            reason: format!(
                "its member path {rel:?} {reason} (an image's links must stay inside it; re-export the image, or copy the directory with `cp -rL` to resolve them)"
            ),
        }
        };
        let mut parts: Vec<std::ffi::OsString> = Vec::new();
        push_components(&mut parts, Path::new(rel)).map_err(&refuse)?;
        // Walk component by component, expanding symlinks lexically within the root.
        let mut resolved: Vec<std::ffi::OsString> = Vec::new();
        let mut pending: Vec<std::ffi::OsString> = parts.into_iter().rev().collect();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            resolved.push(part);
            let here = self.root.join(resolved.iter().collect::<PathBuf>());
            match fs::symlink_metadata(&here) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(refuse("goes through too many symlinks"));
                    }
                    let target =
                        fs::read_link(&here).map_err(ImageError::io_at("cannot read symlink", &here))?;
                    resolved.pop();
                    if target.is_absolute() {
                        return Err(refuse("goes through an absolute symlink"));
                    }
                    let mut expanded = resolved.clone();
                    push_components(&mut expanded, &target)
                        .map_err(|_| refuse("goes through a symlink out of the archive"))?;
                    // Re-walk the expanded target, then what was left.
                    resolved.clear();
                    for p in expanded.into_iter().rev() {
                        pending.push(p);
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("cannot inspect", &here, e)),
            }
        }
        Ok(self.root.join(resolved.iter().collect::<PathBuf>()))
    }

    /// The bytes of member `rel`, a regular file of at most [`MAX_METADATA`] bytes; `what`
    /// names it in errors.
    pub(crate) fn read(&self, rel: &str, what: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.file(rel)?;
        let what_in = format!("{}: {what}", self.input.display());
        read_regular(&path, &what_in, MAX_METADATA)?.ok_or_else(|| ImageError::BadInput {
            path: self.input.clone(),
            reason: format!("{what} ({rel}) is missing"),
        })
    }
}

/// Appends the components of `path` to `parts`, applying `..` lexically; refuses absolute
/// paths and `..` that would climb above the start.
fn push_components(parts: &mut Vec<std::ffi::OsString>, path: &Path) -> Result<(), &'static str> {
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err("climbs out of the archive with `..`");
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(())
}
