//! Changing the store, always under its exclusive lock: committing a staged image (blobs moved
//! in, then `index.json` replaced atomically), dropping a name, and garbage-collecting blobs
//! and unpacked layers no image references any more.

use oci_spec::image::Descriptor;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::digest::parse_sha256;
use crate::error::ImageError;
use crate::fsops::LockKind;
use crate::import::staging::StagedImage;
use crate::layout::{Layout, REF_NAME};

/// The name a descriptor of `index.json` carries.
pub(crate) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

/// Moves the staged blobs into the store and points `image.name` at the staged manifest,
/// replacing an image of that name; then collects what the old one left unreferenced.
pub(crate) fn commit(layout: &Layout, image: StagedImage) -> Result<(), ImageError> {
    let _lock = layout.lock(LockKind::Exclusive)?;
    let mut added: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for (hex, path) in image.staging.blobs()? {
            let dest = layout.blob_path(&hex);
            if dest.exists() {
                continue;
            }
            fs::rename(&path, &dest)
                .map_err(ImageError::io_at("cannot move a blob into the store:", &dest))?;
            added.push(dest);
        }
        let mut index = layout.read_index()?;
        let mut desc = image.manifest.descriptor()?;
        desc.set_annotations(Some(HashMap::from([(REF_NAME.to_string(), image.name.clone())])));
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) != Some(image.name.as_str()))
            .cloned()
            .collect();
        manifests.push(desc);
        index.set_manifests(manifests);
        layout.write_index(&index)
    })();
    if let Err(e) = result {
        for path in added {
            let _ = fs::remove_file(path);
        }
        return Err(e);
    }
    if let Err(e) = collect_garbage(layout) {
        eprintln!("warning: the image was imported, but cleaning the store failed: {e}");
    }
    Ok(())
}

/// Drops the image `name`; its blobs and unpacked layers go unless another image uses them.
pub(crate) fn remove(layout: &Layout, name: &str) -> Result<bool, ImageError> {
    let _lock = layout.lock(LockKind::Exclusive)?;
    let mut index = layout.read_index()?;
    let before = index.manifests().len();
    let manifests: Vec<Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| ref_name(d) != Some(name))
        .cloned()
        .collect();
    if manifests.len() == before {
        return Ok(false);
    }
    index.set_manifests(manifests);
    layout.write_index(&index)?;
    collect_garbage(layout)?;
    Ok(true)
}

/// Removes blobs and unpacked layers that no manifest of `index.json` references, and stale
/// temporary unpack directories. Call with the exclusive lock held (unpacking holds the shared
/// one, so no unpack is in progress). If any manifest or config cannot be read, nothing is
/// removed.
fn collect_garbage(layout: &Layout) -> Result<(), ImageError> {
    let index = layout.read_index()?;
    let mut blobs: HashSet<String> = HashSet::new();
    let mut diff_ids: HashSet<String> = HashSet::new();
    for desc in index.manifests() {
        let image = ref_name(desc).unwrap_or("(unnamed)");
        let digest = desc.digest().to_string();
        blobs.insert(parse_sha256(&digest, "a manifest in index.json")?);
        let manifest = layout.read_manifest(&digest, image)?;
        let config_digest = manifest.config().digest().to_string();
        blobs.insert(parse_sha256(&config_digest, "a config")?);
        for layer in manifest.layers() {
            blobs.insert(parse_sha256(layer.digest().as_ref(), "a layer")?);
        }
        let config = layout.read_config(&config_digest, image)?;
        for id in config.rootfs().diff_ids() {
            diff_ids.insert(parse_sha256(id, "a diff_id")?);
        }
    }
    for entry in fs::read_dir(&layout.blobs).map_err(ImageError::io_at("cannot read", &layout.blobs))? {
        let entry = entry.map_err(ImageError::io_at("cannot read", &layout.blobs))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !blobs.contains(&name) {
            let path = entry.path();
            fs::remove_file(&path).map_err(ImageError::io_at("cannot remove unreferenced blob", &path))?;
        }
    }
    for entry in fs::read_dir(&layout.layers).map_err(ImageError::io_at("cannot read", &layout.layers))? {
        let entry = entry.map_err(ImageError::io_at("cannot read", &layout.layers))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if diff_ids.contains(&name) {
            continue;
        }
        let path = entry.path();
        // Renamed first, so no one ever sees a half-removed layer under its real name.
        let doomed = layout.layers.join(format!(".tmp-gc-{name}"));
        let victim = if name.starts_with(".tmp-") {
            path
        } else {
            fs::rename(&path, &doomed)
                .map_err(ImageError::io_at("cannot remove unreferenced layer", &path))?;
            doomed
        };
        crate::unpack::remove_any(&victim)
            .map_err(ImageError::io_at("cannot remove unreferenced layer", &victim))?;
    }
    // Best effort: what killed imports left behind (owner gone) goes too.
    let _ = crate::stale::remove_stale_staging(layout);
    prune_guest_layers(layout);
    remove_orphan_shifted(layout, &diff_ids)
}

/// Removes the shifted copies (`layers/userns/<range>/<hex>`, see `shift`) whose layer is gone
/// — neither an unpacked layer an image still uses nor a guest layer still kept — with the
/// temporaries of killed copies, and a range left empty. Call after the layers were collected.
fn remove_orphan_shifted(layout: &Layout, diff_ids: &HashSet<String>) -> Result<(), ImageError> {
    for range in layout.userns_ranges() {
        for entry in fs::read_dir(&range).map_err(ImageError::io_at("cannot read", &range))? {
            let entry = entry.map_err(ImageError::io_at("cannot read", &range))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kept = !name.starts_with('.')
                && (diff_ids.contains(&name) || layout.guest_layers.join(&name).is_dir());
            if kept {
                continue;
            }
            let path = entry.path();
            // Renamed first, so no one ever sees a half-removed copy under its real name.
            let victim = if name.starts_with(".tmp-") {
                path
            } else {
                let doomed = range.join(format!(".tmp-gc-{name}"));
                fs::rename(&path, &doomed)
                    .map_err(ImageError::io_at("cannot remove unused shifted layer", &path))?;
                doomed
            };
            crate::unpack::remove_any(&victim)
                .map_err(ImageError::io_at("cannot remove unused shifted layer", &victim))?;
        }
        // Only an empty range directory goes; one holding copies stays.
        let _ = fs::remove_dir(&range);
    }
    Ok(())
}

/// How many guest layers (one per guest binary seen) are kept: the newest ones.
const GUEST_LAYERS_KEPT: usize = 4;

/// Removes all but the newest [`GUEST_LAYERS_KEPT`] guest layers, so rebuilding the guest
/// program over and over does not fill the disk (best effort).
fn prune_guest_layers(layout: &Layout) {
    let Ok(entries) = fs::read_dir(&layout.guest_layers) else {
        return;
    };
    let mut layers: Vec<(SystemTime, PathBuf, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let m = e.metadata().ok()?;
            let modified = m.modified().ok()?;
            (m.is_dir() && !name.starts_with('.')).then(|| (modified, e.path(), name))
        })
        .collect();
    layers.sort_by_key(|l| std::cmp::Reverse(l.0));
    for (_, path, name) in layers.into_iter().skip(GUEST_LAYERS_KEPT) {
        let doomed = layout.guest_layers.join(format!(".tmp-gc-{name}"));
        if fs::rename(&path, &doomed).is_ok() {
            let _ = crate::unpack::remove_any(&doomed);
        }
    }
}
