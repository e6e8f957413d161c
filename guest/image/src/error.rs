//! The one error type of the image store. Every variant names the input or store file at fault
//! and, where there is one, the remedy.

use std::io;
use std::path::{Path, PathBuf};

/// What can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file-system operation failed; `action` says what was being done to which path.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// No image of that name in the store.
    #[error(
        "no image named {name:?} in the store ({}): list them with `sandbox image ls`, or add one with `sandbox image import PATH --name {name}`",
        if available.is_empty() { "it is empty".to_string() } else { format!("images: {}", available.join(", ")) }
    )]
    NotFound { name: String, available: Vec<String> },

    /// An image name that cannot be used as a reference.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    /// The import input does not exist or is of a kind `import` does not read.
    #[error("cannot import {}: {reason}", path.display())]
    BadInput { path: PathBuf, reason: String },

    /// A blob, manifest, config or tar stream failed verification.
    #[error("{what} is corrupt: {reason} (re-export or re-download it)")]
    Corrupt { what: String, reason: String },

    /// Content that is well-formed but not supported here (zstd layers, foreign platforms...).
    #[error("{what} is not supported: {remedy}")]
    Unsupported { what: String, remedy: String },

    /// A layer entry that would land outside the layer directory.
    #[error(
        "{what}: entry {entry:?} is refused: {reason} (a layer may only hold relative paths that stay inside it; re-create the archive)"
    )]
    UnsafeEntry {
        what: String,
        entry: String,
        reason: String,
    },

    /// The default image cannot be built.
    #[error("cannot build the default image: {0}")]
    DefaultImage(String),

    /// The static guest program cannot be found or read.
    #[error("cannot add the guest program to the image: {0}")]
    GuestBinary(String),

    /// A file import reads as a regular file (a tarball, an archive member, a blob) is
    /// something else: a FIFO, a device, a socket, a directory or a symbolic link.
    #[error(
        "{what}: {} is {kind}, not a regular file (import reads images only from regular files: re-export the image, or import a copy of the file itself)",
        path.display()
    )]
    NotRegular {
        what: String,
        path: PathBuf,
        kind: &'static str,
    },

    /// A layer entry that is a device node or FIFO, in an import that did not allow them.
    #[error(
        "{what}: entry {entry:?} is {kind}; device nodes and FIFOs in an image give whoever runs it access to host devices, so they are refused unless asked for: import with --allow-devices (ImportOptions::allow_devices) if you trust this image"
    )]
    DeviceEntry {
        what: String,
        entry: String,
        kind: &'static str,
    },

    /// The store root belongs to another user than the one running.
    #[error(
        "the image store {} belongs to uid {owner}, not to uid {euid} that runs this: refusing to use another user's store; run as its owner, set SANDBOX_HOME to a directory of your own, or take it over with `chown -R {euid} {}`",
        path.display(),
        path.display()
    )]
    ForeignStore { path: PathBuf, owner: u32, euid: u32 },

    /// A layer file owned by an id the user namespace of `--userns` does not map.
    #[error(
        "{what}: {entry} is owned by {kind} {id}, outside the ids 0-{} a --userns container maps: \
         run this image without --userns",
        count.saturating_sub(1)
    )]
    OutsideUserns {
        what: String,
        entry: String,
        kind: &'static str,
        id: u32,
        count: u32,
    },

    /// The store's own metadata (index.json, a manifest or config) cannot be parsed.
    #[error("{what} cannot be parsed: {reason}; if the store is damaged, remove the image with `sandbox image rm` and import it again")]
    Metadata { what: String, reason: String },
}

impl ImageError {
    /// An [`ImageError::Io`] for `action` on `path`.
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> ImageError {
        ImageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// A closure for `map_err`, producing an [`ImageError::Io`].
    pub(crate) fn io_at<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> ImageError + 'a {
        move |source| ImageError::io(action, path, source)
    }

    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> ImageError {
        ImageError::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
