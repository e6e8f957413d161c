//! The record of what a published cache entry was built from (`<key>/inputs.json`), and finding
//! a usable entry by it when the source tarball is absent (a machine that was shipped a kernel,
//! such as the lab's L1, or a host whose linux-source package was removed after the build).
//!
//! The key hashes the tarball's sha256, so without the tarball the key cannot be computed. The
//! fragment and [`BUILDER_VERSION`](crate::BUILDER_VERSION) are compiled into this binary,
//! though, and they are what decide which kernel the guest needs; an entry recording the same
//! two was built for this binary.

use crate::source::hex;
use crate::KernelError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// The file name of the record inside an entry.
pub const INPUTS_FILE: &str = "inputs.json";

/// The inputs of one cache key, as recorded in its entry's `inputs.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    /// The cache key (the entry's directory name) these inputs hash to.
    pub key: String,
    /// [`BUILDER_VERSION`](crate::BUILDER_VERSION) of the builder that made the entry.
    pub builder_version: String,
    /// The sha256 of the fragment's symbols, one `CONFIG_NAME=value` line each (no comments).
    pub fragment_sha256: String,
    /// The sha256 of the source tarball.
    pub source_sha256: String,
    /// The source tarball's path when the entry was built.
    pub source: PathBuf,
    /// The Debian package and version that installed the tarball, when dpkg knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_package: Option<String>,
    /// The installed version of `source_package`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_package_version: Option<String>,
}

impl KeyInputs {
    /// The record as written to `inputs.json` (pretty JSON, ending in a newline).
    pub fn to_json(&self) -> String {
        // Serialising plain strings and paths into JSON cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Reads the record of the entry directory `entry`.
    pub fn read(entry: &Path) -> Result<KeyInputs, KernelError> {
        let path = entry.join(INPUTS_FILE);
        let text = fs::read_to_string(&path).map_err(|e| KernelError::io("cannot read", &path, e))?;
        serde_json::from_str(&text).map_err(|e| KernelError::BadInputs {
            path,
            detail: e.to_string(),
        })
    }

    /// Writes the record into the entry directory `entry`, atomically (a reader sees the whole
    /// file or none).
    pub fn write(&self, entry: &Path) -> Result<(), KernelError> {
        let path = entry.join(INPUTS_FILE);
        let tmp = tempfile::Builder::new()
            .prefix(".inputs-")
            .tempfile_in(entry)
            .map_err(|e| KernelError::io("cannot create a file in", entry, e))?;
        fs::write(tmp.path(), self.to_json()).map_err(|e| KernelError::io("cannot write", tmp.path(), e))?;
        // Readable like the entry's other files (a temporary file starts 0600).
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
            .map_err(|e| KernelError::io("cannot set the mode of", tmp.path(), e))?;
        tmp.persist(&path)
            .map_err(|e| KernelError::io("cannot write", &path, e.error))?;
        Ok(())
    }
}

/// The sha256 of normalised fragment symbols (`CONFIG_NAME=value\n` each).
pub fn fragment_sha256(normalized: &str) -> String {
    hex(&Sha256::digest(normalized.as_bytes()))
}

/// The Debian package owning a `linux-source-*.tar.xz` tarball and its installed version, if
/// dpkg knows it (not an error otherwise: the record is informative).
pub fn source_package(tarball: &Path) -> (Option<String>, Option<String>) {
    let Some(package) = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.xz"))
        .filter(|n| n.starts_with("linux-source-"))
    else {
        return (None, None);
    };
    let version = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty());
    match version {
        Some(v) => (Some(package.to_string()), Some(v)),
        None => (None, None),
    }
}

/// Whether `name` looks like a cache key (16 lower-case hex digits).
pub(crate) fn is_key(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The newest entry under `cache` whose record names `builder_version` and `fragment_sha256` and
/// its own directory, among those for which `complete` holds; returns its directory and key.
/// Newest is by the modification time of its `vmlinux` (then by key, for a stable choice).
pub fn newest_matching(
    cache: &Path,
    builder_version: &str,
    fragment_sha256: &str,
    complete: impl Fn(&Path, &str) -> bool,
) -> Option<(PathBuf, String)> {
    let mut best: Option<(SystemTime, String, PathBuf)> = None;
    for dirent in fs::read_dir(cache).ok()?.flatten() {
        let Some(key) = dirent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let dir = dirent.path();
        if !is_key(&key) || !dir.is_dir() || !complete(&dir, &key) {
            continue;
        }
        let Ok(inputs) = KeyInputs::read(&dir) else {
            continue;
        };
        if inputs.key != key
            || inputs.builder_version != builder_version
            || inputs.fragment_sha256 != fragment_sha256
        {
            continue;
        }
        let built = fs::metadata(dir.join("vmlinux"))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, k, _)| (built, &key) > (*t, k)) {
            best = Some((built, key, dir));
        }
    }
    best.map(|(_, key, dir)| (dir, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_a_round_trip_and_optional_fields_may_be_absent() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = KeyInputs {
            key: "0123456789abcdef".to_string(),
            builder_version: "b".to_string(),
            fragment_sha256: "f".to_string(),
            source_sha256: "s".to_string(),
            source: PathBuf::from("/usr/src/linux-source-6.1.tar.xz"),
            source_package: None,
            source_package_version: None,
        };
        inputs.write(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join(INPUTS_FILE)).unwrap();
        assert!(!text.contains("source_package"), "{text}");
        assert_eq!(KeyInputs::read(dir.path()).unwrap(), inputs);
        // No temporary file is left next to it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_malformed_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(INPUTS_FILE), "{").unwrap();
        let err = KeyInputs::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains(INPUTS_FILE), "{err}");
    }

    #[test]
    fn only_16_hex_digit_names_are_keys() {
        assert!(is_key("9ce12efe42b6b543"));
        assert!(!is_key("src-4d415b3d364834fd"));
        assert!(!is_key("9CE12EFE42B6B543"));
        assert!(!is_key("9ce12efe42b6b543.lock"));
    }

    #[test]
    fn a_tarball_not_from_linux_source_has_no_package() {
        assert_eq!(source_package(Path::new("/tmp/linux-fake.tar.xz")), (None, None));
    }
}
