//! The image store: an OCI image layout under `$SANDBOX_HOME/images`, with every layer unpacked
//! once under `$SANDBOX_HOME/layers/` and shared by every sandbox made from it.
//!
//! - [`Store::import`] reads root file system directories and tarballs, OCI layouts and
//!   `docker save` archives, verifying every blob before the store changes.
//! - [`Store::resolve`] gives the unpacked layer directories (usable directly as overlayfs
//!   lowerdirs: whiteouts are already in overlayfs form), bottom first, with the guest layer —
//!   the current static `sandbox-guest` at `/usr/bin/sandbox-guest` — on top, and the image's
//!   run configuration. [`ResolvedImage::flatten_into`] merges them into one tree for a disk.
//! - [`Store::shifted`] gives copies of those layers with their owners moved into a user
//!   namespace's host id range (`sandbox run --userns`), made once and kept beside them.
//! - [`DEFAULT_IMAGE`] is built on first use from the host's busybox-static.
//!
//! The store is private to its owner: its root and directories are mode 0700, and a root
//! owned by another user is refused. Import reads only regular files, never past their
//! declared size, and refuses device nodes and FIFOs in layers unless
//! [`ImportOptions::allow_devices`] is set.

mod commit;
mod default_image;
mod devices;
mod digest;
mod error;
mod flatten;
mod fsops;
mod guest;
mod import;
mod layout;
mod name;
mod owner;
mod private;
mod regular;
mod shift;
mod stale;
mod store;
mod tarstream;
mod tarwrite;
pub mod time;
mod unpack;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use error::ImageError;
pub use shift::IdShift;
pub use store::{human, ShiftReport, Store};

/// The image used when none is named; built from busybox-static on first use.
pub const DEFAULT_IMAGE: &str = "default";

/// How [`Store::import_with`] imports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// The image's name; default: the name the input carries, else its file name.
    pub name: Option<String>,
    /// Accept device nodes (character and block devices other than 0/0 whiteouts) and FIFOs in
    /// the image's layers. Off by default: such a node gives whoever runs the image — and
    /// whoever reaches the unpacked layer — the host device behind its number.
    pub allow_devices: bool,
}

/// One image, as `sandbox image ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// Bytes stored: manifest, config and layer blobs (compressed as stored).
    pub size_bytes: u64,
    pub layers: usize,
    /// RFC 3339 creation time from the image config, if it has one.
    pub created: Option<String>,
}

/// One layer of an image, as `sandbox image inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDetails {
    /// `sha256:…` of the blob as stored.
    pub digest: String,
    /// `sha256:…` of the uncompressed tar (names the unpacked directory).
    pub diff_id: String,
    pub media_type: String,
    pub size_bytes: u64,
    /// Where the layer is unpacked, if it has been.
    pub unpacked: Option<PathBuf>,
}

/// Everything about one image, as `sandbox image inspect` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDetails {
    pub name: String,
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// The manifest's media type.
    pub media_type: String,
    pub size_bytes: u64,
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    pub config_digest: String,
    pub config: RunConfig,
    /// Bottom first.
    pub layers: Vec<LayerDetails>,
}

/// How the image says to run it (from the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl RunConfig {
    fn from_image_config(config: &oci_spec::image::ImageConfiguration) -> RunConfig {
        let Some(c) = config.config() else {
            return RunConfig::default();
        };
        RunConfig {
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
        }
    }
}

/// An image ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    pub name: String,
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// Unpacked layer directories, bottom first, the guest layer last. Whiteouts are overlayfs
    /// character devices 0/0 and opaque directories carry `trusted.overlay.opaque=y`, so these
    /// can be overlayfs lowerdirs as they are (lowerdir lists the top first: reverse them).
    pub layers: Vec<PathBuf>,
    pub config: RunConfig,
}

impl ResolvedImage {
    /// Applies the layers in order into `dest` (missing or empty), honouring whiteouts and
    /// opaque directories and preserving owners, modes, links, device nodes and mtimes — the
    /// tree an ext4 root disk is made from. Needs root (ownership, device nodes).
    pub fn flatten_into(&self, dest: &Path) -> Result<(), ImageError> {
        eprintln!(
            "flattening image {:?} ({} layers) into {}...",
            self.name,
            self.layers.len(),
            dest.display()
        );
        flatten::flatten(&self.layers, dest)
    }

    /// A `sha256:…` naming exactly this root file system — the image's layers and the guest
    /// layer — to key artifacts built from it (a root disk must be rebuilt when the guest
    /// program changes even though the image digest does not).
    pub fn content_key(&self) -> String {
        let names: Vec<String> = self
            .layers
            .iter()
            .map(|l| {
                l.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        digest::prefixed(&digest::hex_of(names.join("\n").as_bytes()))
    }
}
