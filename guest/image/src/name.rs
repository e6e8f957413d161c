//! Image names: what is accepted as a reference in the store, and the name an input implies.

use std::path::Path;

use crate::error::ImageError;

/// Checks `name` can name an image: 1 to 255 characters, starting with a letter or digit, made
/// of letters, digits and `. _ - : / @ +` (so `alpine:3.19` and `ghcr.io/x/y@sha256:…` work).
pub(crate) fn validate(name: &str) -> Result<(), ImageError> {
    let bad = |reason: &str| ImageError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 255 {
        return Err(bad("it is longer than 255 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("it must start with a letter or digit"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-:/@+".contains(*c)))
    {
        return Err(bad(&format!(
            "{c:?} is not allowed (use letters, digits and . _ - : / @ +)"
        )));
    }
    Ok(())
}

/// The name an input implies: its file or directory name without `.tar`, `.tar.gz`, `.tgz`,
/// `.gz`, with disallowed characters replaced by `-`.
pub(crate) fn from_path(path: &Path) -> String {
    let base = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut stem = base.as_str();
    for suffix in [".tar.gz", ".tgz", ".tar", ".gz"] {
        if let Some(s) = stem.strip_suffix(suffix) {
            stem = s;
            break;
        }
    }
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if cleaned.is_empty() {
        "image".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate("alpine:3.19").is_ok());
        assert!(validate("ghcr.io/a/b").is_ok());
        assert!(validate("").is_err());
        assert!(validate("-x").is_err());
        assert!(validate("a b").is_err());
        assert_eq!(from_path(Path::new("/nonexistent/rootfs.tar.gz")), "rootfs");
        assert_eq!(from_path(Path::new("/nonexistent/my image.tgz")), "my-image");
        assert_eq!(from_path(Path::new("/nonexistent/.hidden")), "hidden");
    }
}
