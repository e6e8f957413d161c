//! Importing a plain root file system — a directory, or a tarball of one — as a one-layer image.

use oci_spec::image::{
    Arch, ConfigBuilder, ImageConfiguration, ImageConfigurationBuilder, Os, RootFsBuilder,
};
use std::path::Path;

use crate::digest::prefixed;
use crate::error::ImageError;
use crate::import::staging::{StagedImage, StagedLayer, Staging};
use crate::tarwrite;

/// The PATH every image made here starts with.
pub(crate) const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A directory (`dir`, which the user named as `input`): one layer, a deterministic tar of the
/// tree (ownership as on disk); device nodes and FIFOs only if the import allows them.
pub(crate) fn import_dir(
    staging: Staging,
    dir: &Path,
    input: &Path,
    name: String,
) -> Result<StagedImage, ImageError> {
    eprintln!(
        "importing {}: packing the directory into a layer...",
        input.display()
    );
    let mut failure = None;
    let devices = staging.devices();
    let blob = staging.put_with(oci_spec::image::MediaType::ImageLayer, |w| {
        tarwrite::write_dir(dir, w, devices).map(|_| ()).map_err(|e| {
            let msg = e.to_string();
            failure = Some(e);
            std::io::Error::other(msg)
        })
    });
    let blob = match (blob, failure) {
        (_, Some(e)) => return Err(e),
        (Err(e), None) => return Err(e),
        (Ok(b), None) => b,
    };
    let layer = StagedLayer {
        diff_hex: blob.hex.clone(),
        blob,
        markers: Vec::new(),
        special: None,
    };
    let config = rootfs_config(&[&layer], None, Some(crate::time::now_rfc3339()))?;
    staging.finish_with_config(&config, &[layer], name)
}

/// A rootfs tarball (`what`) already copied into the staging area as `layer` (plain or gzip)
/// and verified, with its diff_id: one layer, refused if it holds device nodes or FIFOs the
/// import does not allow.
pub(crate) fn import_tarball(
    staging: Staging,
    layer: StagedLayer,
    what: &str,
    name: String,
) -> Result<StagedImage, ImageError> {
    staging.check_devices(&layer, what)?;
    let config = rootfs_config(&[&layer], None, Some(crate::time::now_rfc3339()))?;
    staging.finish_with_config(&config, &[layer], name)
}

/// An image config for `layers` with PATH set, `cmd` if given, and the creation time.
pub(crate) fn rootfs_config(
    layers: &[&StagedLayer],
    cmd: Option<Vec<String>>,
    created: Option<String>,
) -> Result<ImageConfiguration, ImageError> {
    let bad = |e: oci_spec::OciSpecError| ImageError::Metadata {
        what: "the new image config".into(),
        reason: e.to_string(),
    };
    let mut config = ConfigBuilder::default().env(vec![DEFAULT_PATH.to_string()]);
    if let Some(cmd) = cmd {
        config = config.cmd(cmd);
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|l| prefixed(&l.diff_hex)).collect::<Vec<_>>())
        .build()
        .map_err(bad)?;
    let mut builder = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config.build().map_err(bad)?)
        .rootfs(rootfs);
    if let Some(created) = created {
        builder = builder.created(created);
    }
    builder.build().map_err(bad)
}
