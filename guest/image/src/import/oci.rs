//! Importing from an OCI image layout (a directory, or one unpacked from an OCI archive or a
//! recent `docker save`): pick the manifest (by name, else the first; through one nested index,
//! choosing linux/amd64), then verify and stage the manifest, config and layer blobs.

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os};

use crate::digest::parse_sha256;
use crate::error::ImageError;
use crate::import::source::Source;
use crate::import::staging::{check_diff_ids, StagedBlob, StagedImage, Staging};
use crate::layout::REF_NAME;
use crate::regular::{read_declared, MAX_METADATA};

/// containerd's annotation with the full image reference (the OCI one often holds only a tag).
const CONTAINERD_NAME: &str = "io.containerd.image.name";

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn is_index(d: &Descriptor) -> bool {
    match d.media_type() {
        MediaType::ImageIndex => true,
        MediaType::Other(s) => s == DOCKER_MANIFEST_LIST,
        _ => false,
    }
}

fn is_manifest(d: &Descriptor) -> bool {
    match d.media_type() {
        MediaType::ImageManifest => true,
        MediaType::Other(s) => s == DOCKER_MANIFEST,
        _ => false,
    }
}

fn annotation<'a>(d: &'a Descriptor, key: &str) -> Option<&'a str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Imports the image of the OCI layout in `src`.
pub(crate) fn import(
    staging: Staging,
    src: &Source,
    name: Option<&str>,
    fallback_name: String,
) -> Result<StagedImage, ImageError> {
    let input = src.input.display().to_string();
    let layout_bytes = src.read("oci-layout", "the oci-layout file")?;
    let layout: serde_json::Value = serde_json::from_slice(&layout_bytes)
        .map_err(|e| ImageError::corrupt(format!("{input}: oci-layout"), e.to_string()))?;
    match layout.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(v) if v.starts_with("1.") => {}
        other => {
            return Err(ImageError::Unsupported {
                what: format!("{input}: OCI layout version {other:?}"),
                remedy: "export the image as an OCI image layout version 1.x".into(),
            })
        }
    }
    let index_bytes = src.read("index.json", "the index.json file")?;
    let index: ImageIndex = serde_json::from_slice(&index_bytes)
        .map_err(|e| ImageError::corrupt(format!("{input}: index.json"), e.to_string()))?;
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| is_manifest(d) || is_index(d))
        .collect();
    let chosen = name
        .and_then(|n| {
            candidates
                .iter()
                .find(|d| annotation(d, REF_NAME) == Some(n) || annotation(d, CONTAINERD_NAME) == Some(n))
        })
        .or_else(|| candidates.first())
        .copied()
        .ok_or_else(|| ImageError::BadInput {
            path: src.input.clone(),
            reason: "its index.json lists no image manifest".into(),
        })?;
    let image_name = name
        .map(str::to_string)
        .or_else(|| annotation(chosen, CONTAINERD_NAME).map(str::to_string))
        .or_else(|| annotation(chosen, REF_NAME).map(str::to_string))
        .unwrap_or(fallback_name);

    let manifest_desc = if is_index(chosen) {
        let what = format!("{input}: image index {}", chosen.digest());
        let nested_bytes = read_verified(src, chosen, &what)?;
        let nested: ImageIndex =
            serde_json::from_slice(&nested_bytes).map_err(|e| ImageError::corrupt(&what, e.to_string()))?;
        pick_platform(&nested, &what)?
    } else {
        chosen.clone()
    };

    let what = format!("{input}: manifest {}", manifest_desc.digest());
    let (manifest_blob, manifest_bytes) =
        stage_verified(&staging, src, &manifest_desc, &what, MediaType::ImageManifest)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| ImageError::corrupt(&what, e.to_string()))?;

    let config_desc = manifest.config();
    let what = format!("{input}: config {}", config_desc.digest());
    let (_, config_bytes) = stage_verified(
        &staging,
        src,
        config_desc,
        &what,
        config_desc.media_type().clone(),
    )?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| ImageError::corrupt(&what, e.to_string()))?;

    let mut layers = Vec::new();
    for (i, desc) in manifest.layers().iter().enumerate() {
        let what = format!("{input}: layer {} ({})", i + 1, desc.digest());
        let hex = parse_sha256(desc.digest().as_ref(), &what)?;
        let path = src.file(&format!("blobs/sha256/{hex}"))?;
        eprintln!(
            "importing {input}: verifying layer {}/{} ({})...",
            i + 1,
            manifest.layers().len(),
            short(&hex)
        );
        layers.push(staging.put_layer(&path, &what, Some((&hex, desc.size())), Some(desc.media_type()))?);
    }
    check_diff_ids(
        &config,
        &layers,
        &format!("{input}: config {}", config_desc.digest()),
    )?;
    let manifest_blob = StagedBlob {
        media_type: manifest
            .media_type()
            .clone()
            .unwrap_or_else(|| manifest_desc.media_type().clone()),
        ..manifest_blob
    };
    Ok(StagedImage {
        staging,
        manifest: manifest_blob,
        name: image_name,
    })
}

fn short(hex: &str) -> &str {
    &hex[..12.min(hex.len())]
}

/// The linux/amd64 manifest of a multi-platform index.
fn pick_platform(index: &ImageIndex, what: &str) -> Result<Descriptor, ImageError> {
    let manifests: Vec<&Descriptor> = index.manifests().iter().filter(|d| is_manifest(d)).collect();
    if let Some(d) = manifests.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    }) {
        return Ok((*d).clone());
    }
    if manifests.len() == 1 && manifests[0].platform().is_none() {
        return Ok(manifests[0].clone());
    }
    let platforms: Vec<String> = manifests
        .iter()
        .map(|d| match d.platform() {
            Some(p) => format!("{}/{}", p.os(), p.architecture()),
            None => "unspecified".to_string(),
        })
        .collect();
    Err(ImageError::Unsupported {
        what: format!("{what}: no linux/amd64 image (it has: {})", platforms.join(", ")),
        remedy: "export the linux/amd64 variant of the image (e.g. `docker pull --platform linux/amd64`)"
            .into(),
    })
}

/// The bytes of the blob `desc` names, checked against its digest and size (before it is read:
/// no more than the size it declares is read).
fn read_verified(src: &Source, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ImageError> {
    let hex = parse_sha256(desc.digest().as_ref(), what)?;
    if desc.size() > MAX_METADATA {
        return Err(ImageError::corrupt(
            what,
            format!(
                "its descriptor says {} bytes, more than the {MAX_METADATA} accepted for an index",
                desc.size()
            ),
        ));
    }
    let path = src.file(&format!("blobs/sha256/{hex}"))?;
    let bytes = read_declared(&path, what, desc.size())?
        .ok_or_else(|| ImageError::corrupt(what, format!("the blob {} is missing", path.display())))?;
    let got = crate::digest::hex_of(&bytes);
    if got != hex {
        return Err(ImageError::corrupt(
            what,
            format!("it hashes to sha256:{got}, not {}", desc.digest()),
        ));
    }
    Ok(bytes)
}

/// Copies the manifest or config blob `desc` names into the staging area, checked against its
/// digest and size; returns it with its bytes.
fn stage_verified(
    staging: &Staging,
    src: &Source,
    desc: &Descriptor,
    what: &str,
    media_type: MediaType,
) -> Result<(StagedBlob, Vec<u8>), ImageError> {
    let hex = parse_sha256(desc.digest().as_ref(), what)?;
    let path = src.file(&format!("blobs/sha256/{hex}"))?;
    staging.put_metadata(&path, what, Some((&hex, desc.size())), media_type)
}
