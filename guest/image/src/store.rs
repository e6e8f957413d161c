//! [`Store`]: the public face of the image store — import, list, inspect, remove, and resolve
//! an image to its unpacked layer directories (plus the guest layer) and run configuration.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use std::path::{Path, PathBuf};

use crate::commit::{self, ref_name};
use crate::digest::parse_sha256;
use crate::error::ImageError;
use crate::fsops::LockKind;
use crate::layout::Layout;
use crate::shift::{shifted_layer, IdShift};
use crate::unpack::unpack_layer;
use crate::{
    default_image, guest, import, stale, ImageDetails, ImageInfo, ImportOptions, LayerDetails, ResolvedImage,
    RunConfig, DEFAULT_IMAGE,
};

/// Where the guest program put on top of every image comes from.
#[derive(Debug, Clone)]
enum GuestSource {
    /// `sandbox_protocol::paths::guest_binary()`, looked up when an image is resolved.
    Installed,
    /// A given file (tests, tools that carry their own guest program).
    File(PathBuf),
}

/// The image store under a `$SANDBOX_HOME`.
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
    guest: GuestSource,
}

/// One image's index entry, manifest and config, read together.
struct Loaded {
    name: String,
    descriptor: Descriptor,
    manifest: ImageManifest,
    config: ImageConfiguration,
}

impl Store {
    /// Opens the store under `home`, creating its layout if missing, every directory mode 0700;
    /// directories found open to group or others are made 0700 (see [`Store::tightened`]), and
    /// a `home` owned by another user is refused ([`ImageError::ForeignStore`]). Resolved
    /// images get the guest program found by `sandbox_protocol::paths::guest_binary()`.
    pub fn open(home: &Path) -> Result<Store, ImageError> {
        Ok(Store {
            layout: Layout::open(home)?,
            guest: GuestSource::Installed,
        })
    }

    /// Opens the store under `$SANDBOX_HOME` (`sandbox_protocol::paths::sandbox_home()`).
    pub fn open_default() -> Result<Store, ImageError> {
        Store::open(&sandbox_protocol::paths::sandbox_home())
    }

    /// Opens the store under `home`; resolved images get `guest_binary` as their guest program.
    pub fn open_with_guest(home: &Path, guest_binary: &Path) -> Result<Store, ImageError> {
        Ok(Store {
            layout: Layout::open(home)?,
            guest: GuestSource::File(guest_binary.to_path_buf()),
        })
    }

    /// The `$SANDBOX_HOME` this store lives in.
    pub fn home(&self) -> &Path {
        &self.layout.home
    }

    /// Store directories that were open to group or others when the store was opened and
    /// have been made private (0700): for the caller to tell the user. Empty almost always.
    pub fn tightened(&self) -> &[PathBuf] {
        &self.layout.tightened
    }

    /// Imports `path` — a root file system directory or tarball (plain or gzip), an OCI image
    /// layout directory or archive, or a `docker save` tarball — as `name` (else the name the
    /// input carries, else its file name). Every blob is verified before the store changes; an
    /// existing image of the same name is replaced. Device nodes and FIFOs in layers are
    /// refused: see [`Store::import_with`] to allow them.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<ImageInfo, ImageError> {
        let options = ImportOptions {
            name: name.map(str::to_string),
            ..ImportOptions::default()
        };
        self.import_with(path, &options)
    }

    /// [`Store::import`] with every option: the name, and whether layers may hold device nodes
    /// and FIFOs.
    pub fn import_with(&self, path: &Path, options: &ImportOptions) -> Result<ImageInfo, ImageError> {
        let staged = import::stage(&self.layout, path, options)?;
        let name = staged.name.clone();
        commit::commit(&self.layout, staged)?;
        self.info(&name)
    }

    /// Removes what killed imports left: staging directories under `tmp/` whose importing
    /// process (recorded by pid and start time) is gone — or, without a readable record, that
    /// are older than a minute — and, when no one holds the store lock, temporary leftovers of
    /// killed layer unpacks. Returns the paths removed. For `sandbox gc`.
    pub fn remove_stale_staging(&self) -> Result<Vec<PathBuf>, ImageError> {
        stale::remove_stale(&self.layout)
    }

    /// Every image in the store, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let index = self.layout.read_index()?;
        let mut out = Vec::new();
        for desc in index.manifests() {
            if let Some(name) = ref_name(desc) {
                out.push(self.loaded_from(name, desc)?.info());
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The image `name` in detail: manifest digest, layers (digests, sizes, where unpacked), config.
    pub fn inspect(&self, name: &str) -> Result<ImageDetails, ImageError> {
        let loaded = self.load(name)?;
        let diff_ids = loaded.config.rootfs().diff_ids();
        let mut layers = Vec::new();
        for (i, desc) in loaded.manifest.layers().iter().enumerate() {
            let diff_id = diff_ids.get(i).cloned().unwrap_or_default();
            let unpacked = parse_sha256(&diff_id, "a diff_id")
                .ok()
                .map(|hex| self.layout.layers.join(hex))
                .filter(|p| p.is_dir());
            layers.push(LayerDetails {
                digest: desc.digest().to_string(),
                diff_id,
                media_type: desc.media_type().to_string(),
                size_bytes: desc.size(),
                unpacked,
            });
        }
        let info = loaded.info();
        Ok(ImageDetails {
            name: info.name,
            digest: info.digest,
            media_type: loaded.descriptor.media_type().to_string(),
            size_bytes: info.size_bytes,
            created: info.created,
            architecture: loaded.config.architecture().to_string(),
            os: loaded.config.os().to_string(),
            config_digest: loaded.manifest.config().digest().to_string(),
            config: RunConfig::from_image_config(&loaded.config),
            layers,
        })
    }

    /// Drops the image `name`; blobs and unpacked layers no other image uses are removed.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        if commit::remove(&self.layout, name)? {
            Ok(())
        } else {
            Err(self.not_found(name))
        }
    }

    /// The default image, built from the host's busybox-static the first time.
    pub fn ensure_default(&self) -> Result<ImageInfo, ImageError> {
        match self.info(DEFAULT_IMAGE) {
            Ok(info) => Ok(info),
            Err(ImageError::NotFound { .. }) => {
                let staged = default_image::stage(&self.layout)?;
                commit::commit(&self.layout, staged)?;
                self.info(DEFAULT_IMAGE)
            }
            Err(e) => Err(e),
        }
    }

    /// The image `name` ready to run: its layers unpacked (once, shared by everyone), bottom
    /// first, with the guest layer last, and its run configuration. `"default"` is built on
    /// first use.
    pub fn resolve(&self, name: &str) -> Result<ResolvedImage, ImageError> {
        if name == DEFAULT_IMAGE {
            self.ensure_default()?;
        }
        let guest_binary = match &self.guest {
            GuestSource::File(p) => p.clone(),
            GuestSource::Installed => {
                sandbox_protocol::paths::guest_binary().map_err(ImageError::GuestBinary)?
            }
        };
        // Shared: no garbage collection while layers are found or unpacked.
        let _lock = self.layout.lock(LockKind::Shared)?;
        let loaded = self.load(name)?;
        let diff_ids = loaded.config.rootfs().diff_ids();
        let count = loaded.manifest.layers().len();
        if diff_ids.len() != count {
            return Err(ImageError::Metadata {
                what: format!("image {name:?}"),
                reason: format!("its config lists {} diff_ids for {count} layers", diff_ids.len()),
            });
        }
        let mut layers = Vec::new();
        for (i, (desc, diff_id)) in loaded.manifest.layers().iter().zip(diff_ids).enumerate() {
            let what = format!("layer {} ({}) of image {name:?}", i + 1, desc.digest());
            let diff_hex = parse_sha256(diff_id, &what)?;
            let dir = self.layout.layers.join(&diff_hex);
            if !dir.is_dir() {
                let blob = self
                    .layout
                    .blob_path(&parse_sha256(desc.digest().as_ref(), &what)?);
                eprintln!("unpacking {what}, {}...", human(desc.size()));
                unpack_layer(&blob, &diff_hex, &self.layout.layers, &what)?;
            }
            layers.push(dir);
        }
        layers.push(guest::guest_layer(&self.layout, &guest_binary)?);
        Ok(ResolvedImage {
            name: loaded.name,
            digest: loaded.descriptor.digest().to_string(),
            layers,
            config: RunConfig::from_image_config(&loaded.config),
        })
    }

    /// `resolved` (an image of this store) with each layer, the guest layer included, replaced
    /// by its copy for a user namespace that maps ids `0..shift.count` onto host ids from
    /// `shift.uid` and `shift.gid` (`sandbox run --userns`): owners moved into that range, and
    /// opaque directories marked as an overlay mounted inside the namespace reads them
    /// (`user.overlay.opaque`, mount option `userxattr`). Each copy is made once per layer and
    /// range under `layers/userns/<uid>-<gid>/` and kept; the store's garbage collection removes
    /// it with its layer (`sandbox image rm`).
    pub fn shifted(
        &self,
        resolved: &ResolvedImage,
        shift: IdShift,
    ) -> Result<(ResolvedImage, ShiftReport), ImageError> {
        // Shared: no garbage collection while copies are found or made.
        let _lock = self.layout.lock(LockKind::Shared)?;
        let dir = self.layout.userns_range(shift.uid, shift.gid);
        crate::private::ensure_private(&[&self.layout.userns, &dir])?;
        let mut report = ShiftReport {
            dir: dir.clone(),
            ..ShiftReport::default()
        };
        let mut layers = Vec::new();
        for (i, layer) in resolved.layers.iter().enumerate() {
            let name = self.own_layer_name(layer)?;
            let what = format!("layer {} ({name}) of image {:?}", i + 1, resolved.name);
            let (copy, made) = shifted_layer(layer, &name, &dir, shift, &what)?;
            match made {
                Some(copied) => {
                    report.made += 1;
                    report.entries += copied.entries;
                    report.bytes += copied.bytes;
                }
                None => report.reused += 1,
            }
            layers.push(copy);
        }
        Ok((
            ResolvedImage {
                layers,
                ..resolved.clone()
            },
            report,
        ))
    }

    /// The name of `layer`, which must be an unpacked or guest layer of this store (a copy is
    /// keyed by that name, the digest of the layer's content).
    fn own_layer_name(&self, layer: &Path) -> Result<String, ImageError> {
        let same = |a: &Path, b: &Path| {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        };
        let parent = layer.parent().unwrap_or(Path::new(""));
        let name = layer.file_name().map(|n| n.to_string_lossy().into_owned());
        match name {
            Some(name)
                if !name.starts_with('.')
                    && (same(parent, &self.layout.layers) || same(parent, &self.layout.guest_layers)) =>
            {
                Ok(name)
            }
            _ => Err(ImageError::Unsupported {
                what: format!(
                    "shifting the layer {} for a user namespace: it is not a layer of the image store {}",
                    layer.display(),
                    self.layout.home.display()
                ),
                remedy: "import the image with `sandbox image import` and run it by name".into(),
            }),
        }
    }

    fn info(&self, name: &str) -> Result<ImageInfo, ImageError> {
        Ok(self.load(name)?.info())
    }

    fn not_found(&self, name: &str) -> ImageError {
        let available = self
            .layout
            .read_index()
            .map(|i| {
                i.manifests()
                    .iter()
                    .filter_map(|d| ref_name(d).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        ImageError::NotFound {
            name: name.to_string(),
            available,
        }
    }

    fn load(&self, name: &str) -> Result<Loaded, ImageError> {
        let index = self.layout.read_index()?;
        match index.manifests().iter().rev().find(|d| ref_name(d) == Some(name)) {
            Some(desc) => self.loaded_from(name, desc),
            None => Err(self.not_found(name)),
        }
    }

    fn loaded_from(&self, name: &str, desc: &Descriptor) -> Result<Loaded, ImageError> {
        let manifest = self.layout.read_manifest(desc.digest().as_ref(), name)?;
        let config = self
            .layout
            .read_config(manifest.config().digest().as_ref(), name)?;
        Ok(Loaded {
            name: name.to_string(),
            descriptor: desc.clone(),
            manifest,
            config,
        })
    }
}

impl Loaded {
    fn info(&self) -> ImageInfo {
        let size = self.descriptor.size()
            + self.manifest.config().size()
            + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>();
        ImageInfo {
            name: self.name.clone(),
            digest: self.descriptor.digest().to_string(),
            size_bytes: size,
            layers: self.manifest.layers().len(),
            created: self.config.created().clone(),
        }
    }
}

/// What [`Store::shifted`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShiftReport {
    /// Where the copies for this id range are.
    pub dir: PathBuf,
    /// Layers copied now, and layers whose copy was already there.
    pub made: usize,
    pub reused: usize,
    /// What the copies made now hold: entries (files, directories, links, nodes) and bytes.
    pub entries: u64,
    pub bytes: u64,
}

/// A byte count for people: `12.3 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
