//! `sandbox gc --caches` for the kernel cache: what other keys and sources left behind.

use crate::{KernelOptions, Plan};
use std::fs;
use std::path::{Path, PathBuf};

/// What [`sweep_cache`] removed and kept: each directory with its size in bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub removed: Vec<(PathBuf, u64)>,
    pub kept: Vec<(PathBuf, u64)>,
    /// Why nothing but build directories could go (the current key is unknown).
    pub note: Option<String>,
}

fn size_of(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    }
    fs::read_dir(path)
        .map(|d| d.flatten().map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}

/// Removes from `opts.cache_dir` the entries of keys other than the one `opts` builds (a
/// changed fragment or source made them), build directories (a finished build removes its own;
/// these are from builds that were killed, or of other keys) and unpacked sources of other
/// source tarballs. The current key's entry and source stay (a rebuild needs the source).
/// Without the source tarball the current key is unknown, and only build directories of keys
/// that have an entry go.
pub fn sweep_cache(opts: &KernelOptions) -> Sweep {
    let mut sweep = Sweep::default();
    let plan: Option<Plan> = match opts.plan() {
        Ok(plan) => Some(plan),
        Err(e) => {
            sweep.note = Some(format!(
                "the current kernel key is unknown ({e}): only finished builds' directories were swept"
            ));
            None
        }
    };
    let Ok(entries) = fs::read_dir(&opts.cache_dir) else {
        return sweep;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !path.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let current = |key: &str| plan.as_ref().is_none_or(|p| p.key == key);
        let remove = if let Some(key) = name.strip_prefix("build-") {
            // A build in progress holds its key's lock and has no entry yet.
            !current(key) || opts.cache_dir.join(key).join("vmlinux").is_file()
        } else if let Some(src) = name.strip_prefix("src-") {
            plan.as_ref().is_some_and(|p| !p.source_sha.starts_with(src))
        } else if crate::inputs::is_key(&name) {
            !current(&name)
        } else {
            false
        };
        let size = size_of(&path);
        if remove && fs::remove_dir_all(&path).is_ok() {
            sweep.removed.push((path, size));
        } else if name != "source-ids" {
            sweep.kept.push((path, size));
        }
    }
    sweep
}
