//! Importing a `docker save` archive through its `manifest.json`
//! (`[{"Config": ..., "RepoTags": [...], "Layers": [...]}]`): the legacy form
//! (`<id>/layer.tar`, `<config hex>.json`) and the newer one whose paths point into `blobs/`
//! both work. The result is an OCI manifest over the same config and layer tars, whose
//! diff_ids are checked against the config.

use oci_spec::image::{ImageConfiguration, MediaType};
use serde::Deserialize;

use crate::error::ImageError;
use crate::import::source::Source;
use crate::import::staging::{check_diff_ids, StagedImage, Staging};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Imports the image described by `manifest.json` in `src`.
pub(crate) fn import(
    staging: Staging,
    src: &Source,
    name: Option<&str>,
    fallback_name: String,
) -> Result<StagedImage, ImageError> {
    let input = src.input.display().to_string();
    let bytes = src.read("manifest.json", "the docker manifest.json")?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::corrupt(format!("{input}: manifest.json"), e.to_string()))?;
    let entry = name
        .and_then(|n| {
            entries
                .iter()
                .find(|e| e.repo_tags.iter().flatten().any(|t| t == n))
        })
        .or_else(|| entries.first())
        .ok_or_else(|| ImageError::BadInput {
            path: src.input.clone(),
            reason: "its manifest.json lists no image".into(),
        })?;
    let image_name = name
        .map(str::to_string)
        .or_else(|| entry.repo_tags.as_ref().and_then(|t| t.first().cloned()))
        .unwrap_or(fallback_name);

    let what = format!("{input}: config {}", entry.config);
    let config_path = src.file(&entry.config)?;
    let expected_config = hex_in_name(&entry.config);
    let (config_blob, config_bytes) =
        staging.put_metadata(&config_path, &what, None, MediaType::ImageConfig)?;
    if let Some(hex) = expected_config {
        if hex != config_blob.hex {
            return Err(ImageError::corrupt(
                &what,
                format!(
                    "it hashes to sha256:{}, not the sha256:{hex} its name says",
                    config_blob.hex
                ),
            ));
        }
    }
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| ImageError::corrupt(&what, e.to_string()))?;

    let mut layers = Vec::new();
    for (i, rel) in entry.layers.iter().enumerate() {
        let what = format!("{input}: layer {} ({rel})", i + 1);
        let path = src.file(rel)?;
        eprintln!(
            "importing {input}: verifying layer {}/{}...",
            i + 1,
            entry.layers.len()
        );
        let layer = staging.put_layer(&path, &what, None, None)?;
        if let Some(hex) = hex_in_name(rel) {
            if hex != layer.blob.hex {
                return Err(ImageError::corrupt(
                    &what,
                    format!(
                        "it hashes to sha256:{}, not the sha256:{hex} its name says",
                        layer.blob.hex
                    ),
                ));
            }
        }
        layers.push(layer);
    }
    check_diff_ids(&config, &layers, &format!("{input}: config {}", entry.config))?;
    staging.finish(&config_blob, &layers, image_name)
}

/// The digest a content-addressed member name carries: `blobs/sha256/<hex>` or `<hex>.json`.
fn hex_in_name(rel: &str) -> Option<String> {
    let last = rel.rsplit('/').next()?;
    let stem = last.strip_suffix(".json").unwrap_or(last);
    let in_blobs = rel.contains("blobs/sha256/");
    let is_hex = stem.len() == 64
        && stem
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_hex && (in_blobs || last.ends_with(".json"))).then(|| stem.to_string())
}

#[cfg(test)]
mod tests {
    use super::hex_in_name;

    #[test]
    fn content_addressed_names() {
        let hex = "a".repeat(64);
        assert_eq!(hex_in_name(&format!("{hex}.json")), Some(hex.clone()));
        assert_eq!(hex_in_name(&format!("blobs/sha256/{hex}")), Some(hex.clone()));
        assert_eq!(hex_in_name(&format!("{hex}/layer.tar")), None);
        assert_eq!(hex_in_name("config.json"), None);
    }
}
