//! `sandbox gc --caches` on a private `$SANDBOX_CACHE` laid out as the real caches are: the lab's
//! initramfs archives, base disks of both purposes, and guest-kernel entries of other keys and
//! sources. The newest few of each stay, the rest go, and each removal is reported.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn file(path: &Path, age_min: u64, bytes: usize) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, vec![7u8; bytes]).unwrap();
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(age_min * 60))
        .unwrap();
    path.to_path_buf()
}

#[test]
fn gc_caches_keeps_the_newest_of_each_cache_and_reports_the_rest() {
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let c = cache.path();
    // Six archives a minute apart: an automatic sweep would keep them all (all recent).
    let archives: Vec<PathBuf> = (0..6)
        .map(|i| file(&c.join(format!("lab/initramfs-{i}.cpio")), i, 4096))
        .collect();
    let bundles: Vec<PathBuf> = (0..10)
        .map(|i| file(&c.join(format!("disks/bundle-{i}.ext4")), i, 4096))
        .collect();
    let image = file(&c.join("disks/sha256-0.ext4"), 500, 4096);
    // A kernel entry of a key that is not the current one, its leftover build directory, and
    // an unpacked source of another tarball.
    let other_key = file(&c.join("kernel/00000000000000ff/vmlinux"), 10, 4096);
    let other_build = file(&c.join("kernel/build-00000000000000ff/.config"), 10, 100);
    let other_src = file(&c.join("kernel/src-0000000000000000/Makefile"), 10, 100);

    let out = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["gc", "--caches"])
        .env("SANDBOX_CACHE", c)
        .env("SANDBOX_HOME", home.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    let exists = |p: &PathBuf| p.exists();
    assert_eq!(
        archives.iter().map(exists).collect::<Vec<_>>(),
        [true, true, true, false, false, false],
        "{err}"
    );
    assert_eq!(bundles.iter().filter(|p| p.exists()).count(), 8, "{err}");
    assert!(!bundles[8].exists() && !bundles[9].exists(), "{err}");
    assert!(image.exists(), "the only image disk stays: {err}");
    for gone in archives[3..].iter().chain(&bundles[8..]) {
        assert!(
            err.contains(&format!("removed {}", gone.display())),
            "{gone:?} not reported: {err}"
        );
    }
    assert!(err.contains("lab initramfs") && err.contains("freed"), "{err}");

    let source_known = sandbox_kernel::KernelOptions {
        cache_dir: c.join("kernel"),
        ..sandbox_kernel::KernelOptions::default()
    }
    .key()
    .is_ok();
    assert!(!other_build.exists(), "another key's build directory goes: {err}");
    if source_known {
        assert!(!other_key.exists() && !other_src.exists(), "{err}");
        assert!(
            err.contains("removed") && err.contains("00000000000000ff"),
            "{err}"
        );
    } else {
        // Without linux-source the current key is unknown: entries stay, and the report says why.
        assert!(
            other_key.exists() && err.contains("the current kernel key is unknown"),
            "{err}"
        );
    }
}
