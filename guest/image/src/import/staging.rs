//! The staging area of one import: a temporary directory under `$SANDBOX_HOME/tmp/` where every
//! blob is written and verified before anything touches the store. Dropping it removes it, so a
//! refused import leaves nothing behind.

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageManifest, ImageManifestBuilder, MediaType, Sha256Digest,
};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tempfile::TempDir;

use crate::digest::HashingWriter;
use crate::error::ImageError;
use crate::layout::Layout;
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
}

/// An image ready to be committed: all blobs verified in `staging`, and its manifest.
pub(crate) struct StagedImage {
    pub staging: Staging,
    pub manifest: StagedBlob,
    pub name: String,
}

/// A temporary directory holding verified blobs named by their hex digest.
pub(crate) struct Staging {
    dir: TempDir,
    blobs: PathBuf,
}

impl Staging {
    pub(crate) fn new(layout: &Layout) -> Result<Staging, ImageError> {
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&layout.tmp)
            .map_err(ImageError::io_at(
                "cannot create a staging directory in",
                &layout.tmp,
            ))?;
        let blobs = dir.path().join("blobs");
        fs::create_dir(&blobs).map_err(ImageError::io_at("cannot create", &blobs))?;
        Ok(Staging { dir, blobs })
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
        let file = File::create(&tmp).map_err(ImageError::io_at("cannot create", &tmp))?;
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

    /// Copies `src` in as a blob, checking it against `expected` (hex, size) when given;
    /// `what` names the source in errors.
    pub(crate) fn put_copy(
        &self,
        src: &Path,
        what: &str,
        expected: Option<(&str, u64)>,
        media_type: MediaType,
    ) -> Result<StagedBlob, ImageError> {
        let file = File::open(src).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                ImageError::corrupt(what.to_string(), format!("the blob {} is missing", src.display()))
            }
            _ => ImageError::io("cannot open", src, e),
        })?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let blob = self.put_with(media_type, |w| io::copy(&mut reader, w).map(|_| ()))?;
        if let Some((hex, size)) = expected {
            if blob.size != size {
                let _ = fs::remove_file(self.blob_path(&blob.hex));
                return Err(ImageError::corrupt(
                    what.to_string(),
                    format!(
                        "{} is {} bytes, its descriptor says {size}",
                        src.display(),
                        blob.size
                    ),
                ));
            }
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

    /// Stages a layer from `src` and verifies its tar stream; the media type follows the
    /// content (gzip or plain tar) unless the descriptor's `declared` type contradicts it.
    pub(crate) fn put_layer(
        &self,
        src: &Path,
        what: &str,
        expected: Option<(&str, u64)>,
        declared: Option<&MediaType>,
    ) -> Result<StagedLayer, ImageError> {
        if let Some(MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd) = declared {
            return Err(tarstream::zstd_unsupported(what));
        }
        if !src.exists() {
            return Err(ImageError::corrupt(
                what,
                format!("the blob {} is missing", src.display()),
            ));
        }
        let compression = tarstream::sniff(src, what)?;
        let media_type = match (declared, compression) {
            (
                Some(MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip),
                Compression::None,
            ) => {
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
            (Some(other @ MediaType::Other(_)), _) => other.clone(),
            (Some(declared), _) => declared.clone(),
            (None, Compression::Gzip) => MediaType::ImageLayerGzip,
            (None, Compression::None) => MediaType::ImageLayer,
        };
        let blob = self.put_copy(src, what, expected, media_type)?;
        let scan = tarstream::verify_layer(&self.blob_path(&blob.hex), what).inspect_err(|_| {
            let _ = fs::remove_file(self.blob_path(&blob.hex));
        })?;
        Ok(StagedLayer {
            blob,
            diff_hex: scan.facts.diff_hex,
            markers: scan.markers,
        })
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
