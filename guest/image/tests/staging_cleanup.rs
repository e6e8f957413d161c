//! `Store::remove_stale_staging` (what `sandbox gc` calls): a staging directory without an
//! owner record is given a minute before it counts as stale, and leftovers of unpacks go only
//! while no one holds the store lock. Killed and running imports (real `sandbox image import`
//! processes) are tested with the CLI, in the workspace's `tests/image_gc.rs`.

mod common;

use common::*;
use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Holds the store lock exclusively, as a running commit or `image rm` does.
struct HeldLock {
    _file: File,
}

impl HeldLock {
    fn take(home: &Path) -> HeldLock {
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(home.join("images/.lock"))
            .unwrap();
        // SAFETY: the fd belongs to `file`, open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        HeldLock { _file: file }
    }
}

fn set_mtime(path: &Path, ago: Duration) {
    File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

#[test]
fn staging_without_an_owner_record_is_stale_only_after_a_minute() {
    let t = test_store();
    let fresh = t.home.path().join("tmp/import-fresh");
    let old = t.home.path().join("tmp/import-old");
    let garbage = t.home.path().join("tmp/import-garbage");
    for dir in [&fresh, &old, &garbage] {
        fs::create_dir_all(dir.join("blobs")).unwrap();
    }
    fs::write(garbage.join("owner"), "not a pid\n").unwrap();
    set_mtime(&old, Duration::from_secs(120));
    set_mtime(&garbage, Duration::from_secs(120));
    let mut removed = t.store.remove_stale_staging().unwrap();
    removed.sort();
    assert_eq!(removed, vec![garbage.clone(), old.clone()]);
    assert!(
        fresh.is_dir(),
        "a fresh directory may be an import about to record its owner"
    );
    set_mtime(&fresh, Duration::from_secs(61));
    assert_eq!(t.store.remove_stale_staging().unwrap(), vec![fresh.clone()]);
}

#[test]
fn leftovers_of_killed_unpacks_go_when_the_lock_is_free() {
    let t = test_store();
    let leftover = t.home.path().join("layers/sha256/.tmp-unpack-killed");
    fs::create_dir_all(leftover.join("usr")).unwrap();
    let lock = HeldLock::take(t.home.path());
    assert!(
        t.store.remove_stale_staging().unwrap().is_empty(),
        "an unpack may be running while the lock is held"
    );
    assert!(leftover.is_dir());
    drop(lock);
    assert_eq!(t.store.remove_stale_staging().unwrap(), vec![leftover.clone()]);
    assert!(!leftover.exists());
}
