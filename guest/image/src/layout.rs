//! The store on disk under `$SANDBOX_HOME`:
//! - `images/`: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), one
//!   manifest per image, named by the `org.opencontainers.image.ref.name` annotation;
//! - `images/.lock`: the store-wide lock (exclusive for changes, shared while unpacking);
//! - `layers/sha256/<diff_id hex>/`: unpacked layers, `layers/guest/<hex>/`: guest layers;
//! - `layers/userns/<uid>-<gid>/<hex>/`: copies of either with their owners shifted for a user
//!   namespace whose root is host uid `uid` (`sandbox run --userns`, see `shift`);
//! - `tmp/`: staging for imports.
//!
//! The root and every directory here are mode 0700 and must belong to the user running: the
//! layers hold whatever images carry (setuid programs, device nodes, file capabilities).

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::digest::parse_sha256;
use crate::error::ImageError;
use crate::fsops::{self, LockKind};
use crate::private;

/// The annotation naming an image in `index.json`.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Paths of the store, and the operations on its OCI layout.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub home: PathBuf,
    pub images: PathBuf,
    pub blobs: PathBuf,
    pub layers: PathBuf,
    pub guest_layers: PathBuf,
    /// Shifted copies of layers, one directory per id range (made when first needed).
    pub userns: PathBuf,
    pub tmp: PathBuf,
    /// Store directories that were open to group or others when the store was opened, and
    /// were made 0700.
    pub tightened: Vec<PathBuf>,
}

/// A held store lock; released on drop.
pub(crate) struct StoreLock {
    _file: File,
}

impl Layout {
    /// The layout under `home`, created where missing: the root and every store directory
    /// private (0700), those found open to group or others tightened (listed in `tightened`); a
    /// root owned by another user is refused.
    pub(crate) fn open(home: &Path) -> Result<Layout, ImageError> {
        let images = home.join("images");
        let mut layout = Layout {
            home: home.to_path_buf(),
            blobs: images.join("blobs/sha256"),
            layers: home.join("layers/sha256"),
            guest_layers: home.join("layers/guest"),
            userns: home.join("layers/userns"),
            tmp: home.join("tmp"),
            images,
            tightened: Vec::new(),
        };
        private::create_dir_all(home)?;
        private::check_root(home)?;
        layout.tightened = private::ensure_private(&layout.store_dirs())?;
        let oci_layout = layout.images.join("oci-layout");
        if !oci_layout.exists() {
            write_atomic(&oci_layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = layout.index_path();
        if !index.exists() {
            let _lock = layout.lock(LockKind::Exclusive)?;
            if !index.exists() {
                layout.write_index(&empty_index()?)?;
            }
        }
        Ok(layout)
    }

    /// Every directory of the store's own layout, parents first, the root first of all.
    fn store_dirs(&self) -> Vec<&Path> {
        vec![
            &self.home,
            &self.images,
            self.blobs.parent().unwrap_or(&self.images),
            &self.blobs,
            self.layers.parent().unwrap_or(&self.home),
            &self.layers,
            &self.guest_layers,
            &self.tmp,
        ]
    }

    /// Where the layers shifted for host ids `uid`/`gid` are kept.
    pub(crate) fn userns_range(&self, uid: u32, gid: u32) -> PathBuf {
        self.userns.join(format!("{uid}-{gid}"))
    }

    /// Every id range directory under `layers/userns/` (none when it does not exist).
    pub(crate) fn userns_ranges(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.userns) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.images.join("index.json")
    }

    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs.join(hex)
    }

    /// Takes the store-wide lock.
    pub(crate) fn lock(&self, kind: LockKind) -> Result<StoreLock, ImageError> {
        let (path, file) = self.lock_file()?;
        fsops::flock(&file, kind).map_err(ImageError::io_at("cannot lock the store", &path))?;
        Ok(StoreLock { _file: file })
    }

    /// Takes the store-wide lock if no one holds it now.
    pub(crate) fn try_lock(&self, kind: LockKind) -> Result<Option<StoreLock>, ImageError> {
        let (path, file) = self.lock_file()?;
        let locked =
            fsops::try_flock(&file, kind).map_err(ImageError::io_at("cannot lock the store", &path))?;
        Ok(locked.then_some(StoreLock { _file: file }))
    }

    fn lock_file(&self) -> Result<(PathBuf, File), ImageError> {
        let path = self.images.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(ImageError::io_at("cannot open the store lock", &path))?;
        Ok((path, file))
    }

    pub(crate) fn read_index(&self) -> Result<ImageIndex, ImageError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(ImageError::io_at("cannot read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Metadata {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Replaces `index.json` atomically (temporary file, fsync, rename). Call with the lock held.
    pub(crate) fn write_index(&self, index: &ImageIndex) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| ImageError::Metadata {
            what: "the new index.json".into(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.index_path(), &bytes)
    }

    /// A store blob's bytes, checked against its digest.
    pub(crate) fn read_blob(&self, digest: &str, what: &str) -> Result<Vec<u8>, ImageError> {
        let hex = parse_sha256(digest, what)?;
        let path = self.blob_path(&hex);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(ImageError::Metadata {
                    what: format!("{what} ({})", path.display()),
                    reason: "the blob is missing".into(),
                })
            }
            Err(e) => return Err(ImageError::io("cannot read", &path, e)),
        };
        if crate::digest::hex_of(&bytes) != hex {
            return Err(ImageError::Metadata {
                what: format!("{what} ({})", path.display()),
                reason: "its content does not match its digest".into(),
            });
        }
        Ok(bytes)
    }

    pub(crate) fn read_manifest(&self, digest: &str, image: &str) -> Result<ImageManifest, ImageError> {
        let what = format!("the manifest {digest} of image {image:?}");
        let bytes = self.read_blob(digest, &what)?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Metadata {
            what,
            reason: e.to_string(),
        })
    }

    pub(crate) fn read_config(&self, digest: &str, image: &str) -> Result<ImageConfiguration, ImageError> {
        let what = format!("the config {digest} of image {image:?}");
        let bytes = self.read_blob(digest, &what)?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Metadata {
            what,
            reason: e.to_string(),
        })
    }
}

/// An index with no manifests.
pub(crate) fn empty_index() -> Result<ImageIndex, ImageError> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .map_err(|e| ImageError::Metadata {
            what: "a new index.json".into(),
            reason: e.to_string(),
        })
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsynced, then
/// renamed over `path`: readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(ImageError::io_at("cannot create a temporary file in", dir))?;
    tmp.write_all(bytes)
        .map_err(ImageError::io_at("cannot write", tmp.path()))?;
    tmp.as_file()
        .sync_all()
        .map_err(ImageError::io_at("cannot sync", tmp.path()))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .map_err(ImageError::io_at("cannot set the mode of", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| ImageError::io("cannot replace", path, e.error))?;
    Ok(())
}
