//! The store is private to its owner: every directory it makes is mode 0700 whatever the umask,
//! a store found open to others is closed (and `Store::tightened` says which directories), and
//! a store root that belongs to another user is refused.

mod common;

use common::*;
use sandbox_image::Store;
use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The umask is per process: the tests of this file that create directories take turns.
static UMASK: Mutex<()> = Mutex::new(());

/// Every directory of the store's own layout under `home`.
fn store_dirs(home: &Path) -> Vec<PathBuf> {
    [
        "",
        "images",
        "images/blobs",
        "images/blobs/sha256",
        "layers",
        "layers/sha256",
        "layers/guest",
        "tmp",
    ]
    .iter()
    .map(|d| {
        if d.is_empty() {
            home.to_path_buf()
        } else {
            home.join(d)
        }
    })
    .collect()
}

fn mode(path: &Path) -> u32 {
    lstat(path).mode() & 0o7777
}

/// Runs `f` with the process umask set to `mask`.
fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask has no preconditions and cannot fail.
    let old = unsafe { libc::umask(mask) };
    let out = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    out
}

#[test]
fn a_new_store_is_private_whatever_the_umask() {
    let _turn = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    for mask in [0o000, 0o022, 0o277] {
        let base = tempfile::tempdir().unwrap();
        // Missing parents are made by the store too.
        let home = base.path().join("share/sandbox");
        with_umask(mask, || Store::open(&home).unwrap());
        for dir in store_dirs(&home).iter().chain([&base.path().join("share")]) {
            assert_eq!(mode(dir), 0o700, "{} under umask {mask:03o}", dir.display());
        }
    }
}

#[test]
fn what_the_store_makes_later_is_private_too() {
    let _turn = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    let t = test_store();
    let path = t.scratch.path().join("x.tar");
    fs::write(&path, tar_of(&[E::File("x", 0o644, b"x\n")])).unwrap();
    with_umask(0o000, || {
        t.store.import(&path, None).unwrap();
        t.store.resolve("x").unwrap();
    });
    for dir in store_dirs(t.home.path()) {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&t.home.path().join("layers/guest/.by-stat")), 0o700);
    // Metadata files: at most 0644 (the root is private anyway), never writable by others.
    for file in ["images/index.json", "images/oci-layout", "images/.lock"] {
        let m = mode(&t.home.path().join(file));
        assert_eq!(m & 0o133, 0, "{file} is {m:o}");
    }
    for blob in fs::read_dir(t.home.path().join("images/blobs/sha256")).unwrap() {
        let m = mode(&blob.unwrap().path());
        assert_eq!(m & 0o133, 0, "a blob is {m:o}");
    }
}

#[test]
fn an_existing_store_open_to_others_is_tightened_and_reported() {
    let _turn = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    let base = tempfile::tempdir().unwrap();
    let home = base.path().join("sandbox");
    // A store as it used to be made: every directory 0755.
    for dir in store_dirs(&home) {
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let store = Store::open(&home).unwrap();
    assert_eq!(store.tightened(), &store_dirs(&home)[..]);
    for dir in store_dirs(&home) {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    // Opening it again finds nothing to do.
    assert!(Store::open(&home).unwrap().tightened().is_empty());

    // Only the root open to others: only the root is tightened.
    fs::set_permissions(&home, fs::Permissions::from_mode(0o750)).unwrap();
    assert_eq!(Store::open(&home).unwrap().tightened(), &[home.clone()][..]);
    assert_eq!(mode(&home), 0o700);
}

#[test]
fn a_store_root_owned_by_another_user_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let home = base.path().join("theirs");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    chown(&home, Some(65534), Some(65534)).unwrap();
    let err = Store::open(&home).unwrap_err().to_string();
    for needle in [&home.display().to_string(), "65534", "SANDBOX_HOME", "chown"] {
        assert!(err.contains(needle), "the error should mention {needle:?}: {err}");
    }
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(mode(&home), 0o755, "another user's directory is left alone");
    assert_eq!(
        fs::read_dir(&home).unwrap().count(),
        0,
        "nothing was created in it"
    );
}
