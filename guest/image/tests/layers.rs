//! Layers: whiteouts and opaque directories become their overlayfs form when unpacked and are
//! honoured by `flatten_into`; each layer is unpacked once and shared; the guest layer follows
//! the guest binary.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;

fn whiteout_image(t: &TestStore) {
    let lower = Layer::plain(tar_of(&[
        E::Dir("a/", 0o755),
        E::File("a/x", 0o644, b"x from lower\n"),
        E::File("a/y", 0o644, b"y from lower\n"),
        E::Dir("o/", 0o755),
        E::File("o/old", 0o644, b"old\n"),
        E::Dir("o/sub/", 0o755),
        E::File("o/sub/deep", 0o644, b"deep\n"),
        E::File("gone", 0o644, b"to be deleted\n"),
        E::Dir("gonedir/", 0o755),
        E::File("gonedir/f", 0o644, b"f\n"),
        E::Symlink("link", "a/y"),
    ]));
    let upper = Layer::gzip(tar_of(&[
        E::Dir("a/", 0o750),
        E::File("a/.wh.x", 0o644, b""),
        E::Dir("o/", 0o755),
        E::File("o/.wh..wh..opq", 0o644, b""),
        E::File("o/new", 0o644, b"new\n"),
        E::File(".wh.gone", 0o644, b""),
        E::File(".wh.gonedir", 0o644, b""),
        // A symlink replaced by a directory in the upper layer.
        E::Dir("link/", 0o755),
        E::File("link/inside", 0o644, b"inside\n"),
    ]));
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("wh", &[lower, upper])]);
    t.store.import(&dir, None).unwrap();
}

#[test]
fn whiteouts_are_overlayfs_whiteouts_once_unpacked() {
    let t = test_store();
    whiteout_image(&t);
    let resolved = t.store.resolve("wh").unwrap();
    let upper = &resolved.layers[1];
    assert!(
        is_whiteout(&upper.join("a/x")),
        "a/.wh.x became a 0/0 character device named x"
    );
    assert!(is_whiteout(&upper.join("gone")));
    assert!(is_whiteout(&upper.join("gonedir")));
    assert!(
        !upper.join("a/.wh.x").exists() && !upper.join("o/.wh..wh..opq").exists(),
        "no OCI markers left"
    );
    assert_eq!(
        xattr(&upper.join("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr(&upper.join("a"), "trusted.overlay.opaque"),
        None,
        "only the opaque dir is marked"
    );
    assert_eq!(lstat(&upper.join("a")).mode() & 0o7777, 0o750);
}

#[test]
fn flatten_applies_whiteouts_and_opaque_dirs() {
    let t = test_store();
    whiteout_image(&t);
    let resolved = t.store.resolve("wh").unwrap();
    let dest = t.scratch.path().join("flat");
    resolved.flatten_into(&dest).unwrap();

    let mut found: Vec<String> = Vec::new();
    for (rel, _) in snapshot(&dest) {
        found.push(rel);
    }
    assert_eq!(
        found,
        [
            "a",
            "a/y",
            "link",
            "link/inside",
            "o",
            "o/new",
            "usr",
            "usr/bin",
            "usr/bin/sandbox-guest"
        ],
        "lower files hidden by whiteouts and by the opaque dir are gone"
    );
    assert_eq!(fs::read(dest.join("a/y")).unwrap(), b"y from lower\n");
    assert_eq!(
        lstat(&dest.join("a")).mode() & 0o7777,
        0o750,
        "the upper layer's directory mode wins"
    );
    assert_eq!(lstat(&dest.join("a/y")).mtime(), MTIME as i64, "mtimes kept");
    assert_eq!(
        lstat(&dest.join("a")).mtime(),
        MTIME as i64,
        "directory mtimes kept too"
    );
    assert_eq!(
        xattr(&dest.join("o"), "trusted.overlay.opaque"),
        None,
        "overlay markers are not copied"
    );
    assert_eq!(
        fs::read(dest.join("usr/bin/sandbox-guest")).unwrap(),
        GUEST_CONTENT
    );

    // A non-empty destination is refused.
    let err = resolved.flatten_into(&dest).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn flatten_keeps_owners_links_and_devices() {
    let t = test_store();
    let path = t.scratch.path().join("rootfs.tar");
    fs::write(&path, tar_of(&sample_rootfs_entries())).unwrap();
    t.import_allowing_devices(&path, None).unwrap();
    let dest = t.scratch.path().join("flat");
    t.store.resolve("rootfs").unwrap().flatten_into(&dest).unwrap();
    check_sample_rootfs(&dest, true);
}

#[test]
fn layers_are_unpacked_once_and_shared() {
    let t = test_store();
    let shared = Layer::gzip(tar_of(&[
        E::Dir("lib/", 0o755),
        E::File("lib/shared", 0o644, b"shared\n"),
    ]));
    let only_b = Layer::plain(tar_of(&[E::File("b-only", 0o644, b"b\n")]));
    let dir = t.scratch.path().join("layout");
    write_oci_layout(
        &dir,
        &[
            ("a", std::slice::from_ref(&shared)),
            ("b", &[shared.clone(), only_b]),
        ],
    );
    t.store.import(&dir, Some("a")).unwrap();
    t.store.import(&dir, Some("b")).unwrap();

    let first = t.store.resolve("a").unwrap();
    let dir_meta = lstat(&first.layers[0]);
    let file_meta = lstat(&first.layers[0].join("lib/shared"));
    let again = t.store.resolve("a").unwrap();
    assert_eq!(first, again);
    let b = t.store.resolve("b").unwrap();
    assert_eq!(b.layers[0], first.layers[0], "the shared layer is one directory");
    assert_eq!(
        b.layers.last(),
        first.layers.last(),
        "one guest layer for one guest binary"
    );
    for m in [lstat(&again.layers[0]), lstat(&b.layers[0])] {
        assert_eq!(
            (m.ino(), m.mtime(), m.ctime()),
            (dir_meta.ino(), dir_meta.mtime(), dir_meta.ctime())
        );
    }
    let f = lstat(&b.layers[0].join("lib/shared"));
    assert_eq!(
        (f.ino(), f.ctime_nsec()),
        (file_meta.ino(), file_meta.ctime_nsec()),
        "not unpacked again"
    );
    let expected = t.home.path().join("layers/sha256").join(&shared.diff_id[7..]);
    assert_eq!(first.layers[0], expected, "named by the diff_id");
    let leftovers: Vec<_> = fs::read_dir(t.home.path().join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary unpack dirs left: {leftovers:?}"
    );
}

#[test]
fn a_rebuilt_guest_binary_gives_a_new_guest_layer() {
    let t = test_store();
    let path = t.scratch.path().join("rootfs.tar");
    fs::write(&path, tar_of(&[E::File("hello", 0o644, b"hi\n")])).unwrap();
    t.store.import(&path, None).unwrap();
    let before = t.store.resolve("rootfs").unwrap();
    let old_guest = before.layers.last().unwrap().clone();
    // Rebuild the "guest": new content at the same path.
    fs::write(&t.guest, b"#!/bin/sh\necho rebuilt guest\n").unwrap();
    let after = t.store.resolve("rootfs").unwrap();
    let new_guest = after.layers.last().unwrap();
    assert_ne!(&old_guest, new_guest, "a new guest layer for new content");
    assert_eq!(
        fs::read(new_guest.join("usr/bin/sandbox-guest")).unwrap(),
        b"#!/bin/sh\necho rebuilt guest\n"
    );
    assert_eq!(
        before.layers[0], after.layers[0],
        "the image's own layers are untouched"
    );
    assert_eq!(before.digest, after.digest, "no re-import needed");
    assert_ne!(
        before.content_key(),
        after.content_key(),
        "root disks keyed by content are rebuilt"
    );
    assert_eq!(
        after.content_key(),
        t.store.resolve("rootfs").unwrap().content_key()
    );

    // The guest layer is content-addressed: the same content in another home gives the same dir name.
    let other = tempfile::tempdir().unwrap();
    let store2 = sandbox_image::Store::open_with_guest(other.path(), &t.guest).unwrap();
    store2.import(&path, None).unwrap();
    let r2 = store2.resolve("rootfs").unwrap();
    assert_eq!(r2.layers.last().unwrap().file_name(), new_guest.file_name());
}

#[test]
fn a_missing_guest_binary_is_reported() {
    let t = test_store();
    let path = t.scratch.path().join("rootfs.tar");
    fs::write(&path, tar_of(&[E::File("hello", 0o644, b"hi\n")])).unwrap();
    t.store.import(&path, None).unwrap();
    let missing = t.scratch.path().join("no-such-guest");
    let store = sandbox_image::Store::open_with_guest(t.home.path(), &missing).unwrap();
    let err = store.resolve("rootfs").unwrap_err().to_string();
    assert!(
        err.contains("no-such-guest") && err.contains("cargo build"),
        "{err}"
    );
}

#[test]
fn whiteout_then_directory_in_one_layer_is_an_opaque_directory() {
    let t = test_store();
    let lower = Layer::plain(tar_of(&[E::Dir("d/", 0o755), E::File("d/old", 0o644, b"old\n")]));
    // The upper layer deletes d, then makes a new d: lower d's content must not show through.
    let upper = Layer::plain(tar_of(&[
        E::File(".wh.d", 0o644, b""),
        E::Dir("d/", 0o700),
        E::File("d/new", 0o644, b"new\n"),
    ]));
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("redo", &[lower, upper])]);
    t.store.import(&dir, None).unwrap();
    let resolved = t.store.resolve("redo").unwrap();
    let d = resolved.layers[1].join("d");
    assert!(lstat(&d).is_dir());
    assert_eq!(xattr(&d, "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    let dest = t.scratch.path().join("flat");
    resolved.flatten_into(&dest).unwrap();
    assert!(dest.join("d/new").is_file());
    assert!(!dest.join("d/old").exists());
    assert_eq!(lstat(&dest.join("d")).mode() & 0o7777, 0o700);
}

#[test]
fn concurrent_resolves_unpack_each_layer_once() {
    let t = test_store();
    let big: &'static [u8] = Box::leak(vec![7u8; 4 << 20].into_boxed_slice());
    let layer = Layer::gzip(tar_of(&[
        E::File("big", 0o644, big),
        E::File("small", 0o644, b"s\n"),
    ]));
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("race", std::slice::from_ref(&layer))]);
    t.store.import(&dir, None).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| t.store.resolve("race").unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r, &results[0], "everyone gets the same directories");
    }
    assert_eq!(
        fs::metadata(results[0].layers[0].join("big")).unwrap().len(),
        big.len() as u64
    );
    let names: Vec<String> = fs::read_dir(t.home.path().join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        [layer.diff_id[7..].to_string()],
        "one layer dir, no temporary ones left"
    );
}

#[test]
fn old_guest_layers_are_pruned_newest_kept() {
    let t = test_store();
    let path = t.scratch.path().join("rootfs.tar");
    fs::write(&path, tar_of(&[E::File("hello", 0o644, b"hi\n")])).unwrap();
    t.store.import(&path, None).unwrap();
    let mut guest_dirs = Vec::new();
    for i in 0..6 {
        fs::write(&t.guest, format!("#!/bin/sh\necho guest build {i}\n")).unwrap();
        guest_dirs.push(t.store.resolve("rootfs").unwrap().layers.last().unwrap().clone());
    }
    // Any store change collects garbage; importing another image is one.
    t.store.import(&path, Some("other")).unwrap();
    let kept: Vec<bool> = guest_dirs.iter().map(|d| d.is_dir()).collect();
    assert_eq!(
        kept,
        [false, false, true, true, true, true],
        "the four newest guest layers stay"
    );
    let r = t.store.resolve("rootfs").unwrap();
    assert_eq!(r.layers.last(), guest_dirs.last(), "the current one is reused");
}
