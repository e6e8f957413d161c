//! Bounds on the disk cache (`sandbox_cache()/disks`). Each base disk's mtime is its last use
//! (refreshed on every hit, [`touch`]); per purpose — image root disks (`sha256-…`) and OCI
//! bundle disks (`bundle-…`, a new one for every bundle directory podman or containerd makes) —
//! the [`KEEP_NEWEST`] most recently used stay. After every build, [`sweep`] also keeps what
//! was used within [`RECENT`] (a concurrent run may be about to copy it); `sandbox gc --caches`
//! sweeps without that grace. Temporary files of builds that were killed go once an hour old.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Base disks of each purpose always kept.
pub const KEEP_NEWEST: usize = 8;
/// Beyond the newest, disks used this recently stay too (automatic sweeps only).
pub const RECENT: Duration = Duration::from_secs(15 * 60);
/// A build's temporary file or directory older than this was left by a killed build.
const ABANDONED: Duration = Duration::from_secs(60 * 60);

/// What a sweep removed and kept: each file with its size in bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub removed: Vec<(PathBuf, u64)>,
    pub kept: Vec<(PathBuf, u64)>,
}

/// Marks `path` as just used (its mtime), so a sweep counts it among the newest.
pub fn touch(path: &Path) {
    if let Ok(f) = fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| fs::File::open(path))
    {
        let _ = f.set_modified(SystemTime::now());
    }
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

/// Sweeps `cache_dir`: per purpose the [`KEEP_NEWEST`] most recently used disks stay, and with
/// `recent`, every disk used within it; abandoned temporary files go.
pub fn sweep(cache_dir: &Path, recent: Option<Duration>) -> Sweep {
    let mut sweep = Sweep::default();
    let Ok(entries) = fs::read_dir(cache_dir) else {
        return sweep;
    };
    let mut disks: Vec<(bool, SystemTime, PathBuf)> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(modified) = e.metadata().ok().and_then(|m| m.modified().ok()) else {
            continue;
        };
        let age = modified.elapsed().unwrap_or_default();
        if name.starts_with('.') {
            if age > ABANDONED {
                let path = e.path();
                let size = size_of(&path);
                let gone = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if gone.is_ok() {
                    sweep.removed.push((path, size));
                }
            }
            continue;
        }
        if name.ends_with(".ext4") {
            disks.push((name.starts_with("bundle-"), modified, e.path()));
        }
    }
    disks.sort_by_key(|d| std::cmp::Reverse(d.1));
    let mut seen = [0usize; 2];
    for (bundle, modified, path) in disks {
        let rank = &mut seen[usize::from(bundle)];
        *rank += 1;
        let size = size_of(&path);
        let fresh = recent.is_some_and(|r| modified.elapsed().unwrap_or_default() <= r);
        if *rank <= KEEP_NEWEST || fresh || fs::remove_file(&path).is_err() {
            sweep.kept.push((path, size));
        } else {
            sweep.removed.push((path, size));
        }
    }
    sweep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_of_each_purpose_stay_and_the_rest_go() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let make = |name: &str, age_min: u64| {
            let p = dir.path().join(name);
            let f = fs::File::create(&p).unwrap();
            f.set_modified(now - Duration::from_secs(age_min * 60)).unwrap();
            p
        };
        // Ten bundle disks, two hours apart in use; three image disks; a killed build's file.
        let bundles: Vec<PathBuf> = (0..10)
            .map(|i| make(&format!("bundle-{i}.ext4"), 120 * i))
            .collect();
        let images: Vec<PathBuf> = (0..3)
            .map(|i| make(&format!("sha256-{i}.ext4"), 600 * i))
            .collect();
        let abandoned = make(".sha256-x-123.ext4.tmp", 120);
        let building = make(".sha256-y-456.ext4.tmp", 1);
        // An automatic sweep keeps the newest eight bundles (and nothing else is recent).
        let swept = sweep(dir.path(), Some(RECENT));
        let removed: Vec<&PathBuf> = swept.removed.iter().map(|r| &r.0).collect();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(removed.contains(&&bundles[8]) && removed.contains(&&bundles[9]));
        assert!(removed.contains(&&abandoned));
        assert!(building.exists(), "a build in progress stays");
        assert!(
            images.iter().all(|p| p.exists()),
            "three image disks are below the bound"
        );
        // A disk used again counts as new.
        touch(&bundles[7]);
        make("bundle-new.ext4", 0);
        let swept = sweep(dir.path(), None);
        assert_eq!(swept.removed.len(), 1, "{:?}", swept.removed);
        assert_eq!(swept.removed[0].0, bundles[6]);
        assert!(bundles[7].exists());
    }
}
