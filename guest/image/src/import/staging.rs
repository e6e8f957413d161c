//! The staging area of one import: a temporary directory under `$SANDBOX_HOME/tmp/` where every
//! blob is written and verified before anything touches the store. Dropping it removes it, so a
//! refused import leaves nothing behind.

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageManifest, ImageManifestBuilder, MediaType, Sha256Digest,
};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tempfile::TempDir;

use crate::devices::{self, DevicePolicy, SpecialEntry};
use crate::digest::HashingWriter;
use crate::error::ImageError;
use crate::layout::Layout;
use crate::owner::Owner;
use crate::private;
use crate::regular::{self, Regular};
use crate::tarstream::{self, Compression};

/// A verified blob in the staging area.
#[derive(Debug, Clone)]
pub(crate) struct StagedBlob {
    pub hex: String,
    pub size: u64,
    pub media_type: MediaType,
}

impl StagedBlob {
    pub(crate) fn descriptor(&self) -> Result<Descriptor, ImageError> {
        let digest = Sha256Digest::from_str(&self.hex)
            .map_err(|e| ImageError::corrupt(format!("digest {}", self.hex), e.to_string()))?;
        Ok(Descriptor::new(self.media_type.clone(), self.size, digest))
    }
}

/// A verified layer blob and what its uncompressed stream hashes to.
#[derive(Debug, Clone)]
pub(crate) struct StagedLayer {
    pub blob: StagedBlob,
    pub diff_hex: String,
    /// Which image-archive marker files (`manifest.json`, ...) the tar has at its top.
    pub markers: Vec<&'static str>,
    /// The first device node or FIFO in the tar, if any.
    pub special: Option<SpecialEntry>,
}

/// An image ready to be committed: all blobs verified in `staging`, and its manifest.
pub(crate) struct StagedImage {
    pub staging: Staging,
    pub manifest: StagedBlob,
    pub name: String,
}

/// A temporary directory (mode 0700) holding verified blobs named by their hex digest, and
/// the record of the process that owns it, so that `sandbox gc` can tell a killed import's
/// leftovers from a running one.
pub(crate) struct Staging {
    dir: TempDir,
    blobs: PathBuf,
    devices: DevicePolicy,
}

impl Staging {
    pub(crate) fn new(layout: &Layout, devices: DevicePolicy) -> Result<Staging, ImageError> {
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&layout.tmp)
            .map_err(ImageError::io_at(
                "cannot create a staging directory in",
                &layout.tmp,
            ))?;
        if let Some(me) = Owner::me() {
            me.record(dir.path())?;
        }
        let blobs = dir.path().join("blobs");
        private::create_dir(&blobs)?;
        Ok(Staging { dir, blobs, devices })
    }

    /// A scratch path inside the staging area (for unpacking archives).
    pub(crate) fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs.join(hex)
    }

    /// Every staged blob: (hex, path).
    pub(crate) fn blobs(&self) -> Result<Vec<(String, PathBuf)>, ImageError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(ImageError::io_at("cannot read", &self.blobs))? {
            let entry = entry.map_err(ImageError::io_at("cannot read", &self.blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push((name, entry.path()));
            }
        }
        Ok(out)
    }

    /// Stages `bytes` as a blob.
    pub(crate) fn put_bytes(&self, bytes: &[u8], media_type: MediaType) -> Result<StagedBlob, ImageError> {
        self.put_with(media_type, |w| w.write_all(bytes))
    }

    /// Stages a blob produced by `write`, hashing it on the way.
    pub(crate) fn put_with(
        &self,
        media_type: MediaType,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<StagedBlob, ImageError> {
        let tmp = self.blobs.join(".incoming");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(ImageError::io_at("cannot create", &tmp))?;
        let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 16, file));
        write(&mut w).map_err(ImageError::io_at("cannot write", &tmp))?;
        let (buf, hex, size) = w.finish();
        let file = buf
            .into_inner()
            .map_err(|e| ImageError::io("cannot write", &tmp, e.into_error()))?;
        file.sync_all().map_err(ImageError::io_at("cannot sync", &tmp))?;
        let dest = self.blob_path(&hex);
        fs::rename(&tmp, &dest).map_err(ImageError::io_at("cannot rename to", &dest))?;
        Ok(StagedBlob {
            hex,
            size,
            media_type,
        })
    }

    /// Copies the regular file `src` in as a blob, checking it against `expected` (hex, size)
    /// when given; `what` names the source in errors. The size is checked before anything is
    /// read, and no more than that size plus one byte is ever read: a file that is not regular,
    /// or does not hold exactly its size, is refused.
    pub(crate) fn put_copy(
        &self,
        src: &Path,
        what: &str,
        expected: Option<(&str, u64)>,
        media_type: MediaType,
    ) -> Result<StagedBlob, ImageError> {
        let Regular { file, size: on_disk } = regular::open_regular(src, what)?.ok_or_else(|| {
            ImageError::corrupt(what.to_string(), format!("the blob {} is missing", src.display()))
        })?;
        let size = match expected {
            Some((_, declared)) if declared != on_disk => {
                return Err(ImageError::corrupt(
                    what.to_string(),
                    format!(
                        "{} is {on_disk} bytes, its descriptor says {declared}",
                        src.display()
                    ),
                ))
            }
            Some((_, declared)) => declared,
            None => on_disk,
        };
        let blob = self.copy_exactly(file, src, what, size, media_type)?;
        if let Some((hex, _)) = expected {
            if blob.hex != hex {
                let _ = fs::remove_file(self.blob_path(&blob.hex));
                return Err(ImageError::corrupt(
                    what.to_string(),
                    format!(
                        "{} hashes to sha256:{}, not the expected sha256:{hex}",
                        src.display(),
                        blob.hex
                    ),
                ));
            }
        }
        Ok(blob)
    }

    /// Stages exactly `size` bytes of `file`: reads at most `size + 1` and refuses, before the
    /// blob is named, when more or fewer arrive.
    fn copy_exactly(
        &self,
        file: File,
        src: &Path,
        what: &str,
        size: u64,
        media_type: MediaType,
    ) -> Result<StagedBlob, ImageError> {
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut mismatch = None;
        let blob = self.put_with(media_type, |w| {
            let got = regular::copy_sized(&mut reader, w, size)?;
            mismatch = regular::size_mismatch(got, size);
            match &mismatch {
                Some(reason) => Err(io::Error::new(io::ErrorKind::InvalidData, reason.clone())),
                None => Ok(()),
            }
        });
        if let Some(reason) = mismatch {
            return Err(ImageError::corrupt(
                what.to_string(),
                format!("{}: {reason}", src.display()),
            ));
        }
        blob
    }

    /// Stages a JSON file (a manifest or config) no larger than [`regular::MAX_METADATA`] and
    /// returns it with its bytes; like [`Self::put_copy`] otherwise.
    pub(crate) fn put_metadata(
        &self,
        src: &Path,
        what: &str,
        expected: Option<(&str, u64)>,
        media_type: MediaType,
    ) -> Result<(StagedBlob, Vec<u8>), ImageError> {
        if let Some((_, size)) = expected.filter(|(_, size)| *size > regular::MAX_METADATA) {
            return Err(ImageError::corrupt(
                what.to_string(),
                format!(
                    "its descriptor says {size} bytes, more than the {} accepted for a manifest or config",
                    regular::MAX_METADATA
                ),
            ));
        }
        let blob = self.put_copy(src, what, expected, media_type)?;
        let path = self.blob_path(&blob.hex);
        let bytes = regular::read_regular(&path, what, regular::MAX_METADATA)?
            .ok_or_else(|| ImageError::io("cannot read", &path, io::ErrorKind::NotFound.into()))?;
        Ok((blob, bytes))
    }

    /// Stages an image layer from `src` and verifies its tar stream; the media type follows the
    /// content (gzip or plain tar) unless the descriptor's `declared` type contradicts it.
    /// Device nodes and FIFOs in it are refused unless this import allows them.
    pub(crate) fn put_layer(
        &self,
        src: &Path,
        what: &str,
        expected: Option<(&str, u64)>,
        declared: Option<&MediaType>,
    ) -> Result<StagedLayer, ImageError> {
        let layer = self.put_tar(src, what, expected, declared)?;
        self.check_devices(&layer, what)?;
        Ok(layer)
    }

    /// Stages the user's tarball `src`, which may be a root file system (then check it with
    /// [`Self::check_devices`]) or an image archive.
    pub(crate) fn put_tarball(&self, src: &Path, what: &str) -> Result<StagedLayer, ImageError> {
        self.put_tar(src, what, None, None)
    }

    /// Refuses a layer holding device nodes or FIFOs unless this import allows them.
    pub(crate) fn check_devices(&self, layer: &StagedLayer, what: &str) -> Result<(), ImageError> {
        devices::check(self.devices, what, layer.special.as_ref())
    }

    /// Whether this import allows device nodes and FIFOs in layers.
    pub(crate) fn devices(&self) -> DevicePolicy {
        self.devices
    }

    /// Copies `src` in (bounded, checked against `expected`), then reads the copy: compression
    /// by magic bytes, media type, tar framing, entry paths, diff_id.
    fn put_tar(
        &self,
        src: &Path,
        what: &str,
        expected: Option<(&str, u64)>,
        declared: Option<&MediaType>,
    ) -> Result<StagedLayer, ImageError> {
        if let Some(MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd) = declared {
            return Err(tarstream::zstd_unsupported(what));
        }
        let blob = self.put_copy(src, what, expected, MediaType::ImageLayer)?;
        let staged = self.blob_path(&blob.hex);
        let verified = (|| {
            let media_type = layer_media_type(declared, tarstream::sniff(&staged, what)?, what)?;
            let scan = tarstream::verify_layer(&staged, what)?;
            Ok(StagedLayer {
                blob: StagedBlob {
                    media_type,
                    ..blob.clone()
                },
                diff_hex: scan.facts.diff_hex,
                markers: scan.markers,
                special: scan.special,
            })
        })();
        if verified.is_err() {
            let _ = fs::remove_file(&staged);
        }
        verified
    }

    /// Stages `config` (serialized) and a manifest naming it and `layers`; returns the image.
    pub(crate) fn finish_with_config(
        self,
        config: &ImageConfiguration,
        layers: &[StagedLayer],
        name: String,
    ) -> Result<StagedImage, ImageError> {
        let bytes = serde_json::to_vec(config).map_err(|e| ImageError::Metadata {
            what: "the new image config".into(),
            reason: e.to_string(),
        })?;
        let config = self.put_bytes(&bytes, MediaType::ImageConfig)?;
        self.finish(&config, layers, name)
    }

    /// Stages a manifest naming `config` and `layers`; returns the image.
    pub(crate) fn finish(
        self,
        config: &StagedBlob,
        layers: &[StagedLayer],
        name: String,
    ) -> Result<StagedImage, ImageError> {
        let manifest: ImageManifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor()?)
            .layers(
                layers
                    .iter()
                    .map(|l| l.blob.descriptor())
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .build()
            .map_err(|e| ImageError::Metadata {
                what: "the new manifest".into(),
                reason: e.to_string(),
            })?;
        let bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Metadata {
            what: "the new manifest".into(),
            reason: e.to_string(),
        })?;
        let manifest = self.put_bytes(&bytes, MediaType::ImageManifest)?;
        Ok(StagedImage {
            staging: self,
            manifest,
            name,
        })
    }
}

/// Checks the layers' diff_ids against the config's `rootfs.diff_ids`.
pub(crate) fn check_diff_ids(
    config: &ImageConfiguration,
    layers: &[StagedLayer],
    what: &str,
) -> Result<(), ImageError> {
    let ids = config.rootfs().diff_ids();
    if ids.len() != layers.len() {
        return Err(ImageError::corrupt(
            what,
            format!(
                "the config lists {} layer diff_ids but the manifest has {} layers",
                ids.len(),
                layers.len()
            ),
        ));
    }
    for (i, (id, layer)) in ids.iter().zip(layers).enumerate() {
        let want = crate::digest::parse_sha256(id, what)?;
        if want != layer.diff_hex {
            return Err(ImageError::corrupt(
                what,
                format!(
                    "layer {} (sha256:{}) unpacks to sha256:{}, but the config's diff_id is {id}",
                    i + 1,
                    layer.blob.hex,
                    layer.diff_hex
                ),
            ));
        }
    }
    Ok(())
}

/// The media type of a layer blob: what its descriptor declares, checked against the
/// compression its content shows, else what the content shows.
fn layer_media_type(
    declared: Option<&MediaType>,
    compression: Compression,
    what: &str,
) -> Result<MediaType, ImageError> {
    Ok(match (declared, compression) {
        (Some(MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip), Compression::None) => {
            return Err(ImageError::corrupt(
                what,
                "its media type says gzip but the blob is not gzip",
            ));
        }
        (Some(MediaType::ImageLayer | MediaType::ImageLayerNonDistributable), Compression::Gzip) => {
            return Err(ImageError::corrupt(
                what,
                "its media type says uncompressed tar but the blob is gzip",
            ));
        }
        (Some(declared), _) => declared.clone(),
        (None, Compression::Gzip) => MediaType::ImageLayerGzip,
        (None, Compression::None) => MediaType::ImageLayer,
    })
}
