//! Layers shifted for a user namespace (`sandbox run --userns`): every layer of a resolved
//! image, the guest layer included, gets a copy under `layers/userns/<uid>-<gid>/` with its
//! owners moved into the range, whiteouts kept and the opaque mark in its `user.` form; the
//! copies are made once, reused, and removed with the image.

mod common;

use common::*;
use sandbox_image::{IdShift, ImageError};
use std::fs;
use std::os::unix::fs::MetadataExt;

const SHIFT: IdShift = IdShift {
    uid: 1_000_000,
    gid: 1_500_000,
    count: 65536,
};

/// A two-layer image: a lower one with owners 0 and 1000:1001, an upper one whiting out a file
/// and making a directory opaque.
fn two_layer_image(t: &TestStore, name: &str) {
    let lower = Layer::plain(tar_of(&[
        E::Dir("etc/", 0o755),
        E::File("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n"),
        E::Owned("etc/tool", 0o4755, 1000, 1001, b"#!/bin/sh\n"),
        E::Dir("o/", 0o755),
        E::File("o/old", 0o644, b"old\n"),
        E::File("gone", 0o644, b"to be deleted\n"),
    ]));
    let upper = Layer::gzip(tar_of(&[
        E::Dir("o/", 0o755),
        E::File("o/.wh..wh..opq", 0o644, b""),
        E::File("o/new", 0o644, b"new\n"),
        E::File(".wh.gone", 0o644, b""),
    ]));
    let dir = t.scratch.path().join(format!("layout-{name}"));
    write_oci_layout(&dir, &[(name, &[lower, upper])]);
    t.store.import(&dir, None).unwrap();
}

fn owner(path: &std::path::Path) -> (u32, u32) {
    let m = lstat(path);
    (m.uid(), m.gid())
}

#[test]
fn every_layer_gets_a_copy_with_owners_in_the_range() {
    let t = test_store();
    two_layer_image(&t, "two");
    let resolved = t.store.resolve("two").unwrap();
    let (shifted, report) = t.store.shifted(&resolved, SHIFT).unwrap();
    let range = t.home.path().join("layers/userns/1000000-1500000");
    assert_eq!(report.dir, range);
    assert_eq!(
        (report.made, report.reused),
        (3, 0),
        "two image layers and the guest layer"
    );
    assert!(report.entries >= 10 && report.bytes > 0, "{report:?}");
    assert_eq!(shifted.layers.len(), 3);
    for (copy, original) in shifted.layers.iter().zip(&resolved.layers) {
        assert_eq!(copy.parent(), Some(range.as_path()));
        assert_eq!(
            copy.file_name(),
            original.file_name(),
            "keyed by the layer's digest"
        );
    }
    assert_eq!(
        (shifted.name.as_str(), &shifted.config),
        ("two", &resolved.config)
    );
    let (lower, upper, guest) = (&shifted.layers[0], &shifted.layers[1], &shifted.layers[2]);
    assert_eq!(owner(lower), (1_000_000, 1_500_000), "the layer root");
    assert_eq!(owner(&lower.join("etc/passwd")), (1_000_000, 1_500_000));
    assert_eq!(owner(&lower.join("etc/tool")), (1_001_000, 1_501_001));
    assert_eq!(lstat(&lower.join("etc/tool")).mode() & 0o7777, 0o4755);
    assert_eq!(lstat(&lower.join("etc/passwd")).mtime(), MTIME as i64);
    assert_eq!(
        owner(&guest.join("usr/bin/sandbox-guest")),
        (1_000_000, 1_500_000)
    );
    assert_eq!(
        fs::read(guest.join("usr/bin/sandbox-guest")).unwrap(),
        GUEST_CONTENT
    );
    assert!(is_whiteout(&upper.join("gone")), "the whiteout is kept");
    assert_eq!(owner(&upper.join("gone")), (1_000_000, 1_500_000));
    assert_eq!(
        xattr(&upper.join("o"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..]),
        "the opaque mark an overlay inside a user namespace reads"
    );
    assert_eq!(xattr(&upper.join("o"), "trusted.overlay.opaque"), None);
    // The originals are untouched.
    assert_eq!(owner(&resolved.layers[0].join("etc/passwd")), (0, 0));
    assert_eq!(
        xattr(&resolved.layers[1].join("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // The range directory is the store's: private to its owner.
    assert_eq!(lstat(&range).mode() & 0o7777, 0o700);
    assert_eq!(owner(&range), (0, 0));
}

#[test]
fn copies_are_reused_and_go_with_their_image() {
    let t = test_store();
    two_layer_image(&t, "two");
    let resolved = t.store.resolve("two").unwrap();
    let (first, _) = t.store.shifted(&resolved, SHIFT).unwrap();
    let marker = first.layers[0].join("etc/passwd");
    let inode = lstat(&marker).ino();
    let (again, report) = t.store.shifted(&resolved, SHIFT).unwrap();
    assert_eq!((report.made, report.reused, report.entries), (0, 3, 0));
    assert_eq!(again.layers, first.layers);
    assert_eq!(lstat(&marker).ino(), inode, "not copied again");
    // Another range gets copies of its own.
    let other = IdShift {
        uid: 2_000_000,
        gid: 2_000_000,
        count: 65536,
    };
    let (elsewhere, report) = t.store.shifted(&resolved, other).unwrap();
    assert_eq!(report.made, 3);
    assert_eq!(
        owner(&elsewhere.layers[0].join("etc/passwd")),
        (2_000_000, 2_000_000)
    );

    t.store.remove("two").unwrap();
    for layers in [&first.layers, &elsewhere.layers] {
        assert!(
            !layers[0].exists() && !layers[1].exists(),
            "image layer copies removed"
        );
        assert!(layers[2].is_dir(), "the guest layer stays, as its original does");
    }
    let leftovers: Vec<_> = fs::read_dir(first.layers[0].parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "only the guest layer's copy: {leftovers:?}");
}

#[test]
fn a_layer_from_outside_the_store_is_refused() {
    let t = test_store();
    two_layer_image(&t, "two");
    let mut resolved = t.store.resolve("two").unwrap();
    let stray = t.scratch.path().join("handmade");
    fs::create_dir(&stray).unwrap();
    resolved.layers.insert(0, stray.clone());
    let err = t.store.shifted(&resolved, SHIFT).unwrap_err();
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains(&stray.display().to_string()), "{err}");
}

#[test]
fn an_owner_outside_the_range_is_refused() {
    let t = test_store();
    let layer = Layer::plain(tar_of(&[
        E::Dir("home/", 0o755),
        E::Owned("home/far", 0o644, 100_000, 0, b"far\n"),
    ]));
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("far", &[layer])]);
    t.store.import(&dir, None).unwrap();
    let resolved = t.store.resolve("far").unwrap();
    let err = t.store.shifted(&resolved, SHIFT).unwrap_err().to_string();
    assert!(
        err.contains("/home/far") && err.contains("uid 100000") && err.contains("\"far\""),
        "{err}"
    );
    let range = t.home.path().join("layers/userns/1000000-1500000");
    let names: Vec<_> = fs::read_dir(&range)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".tmp-")),
        "a failed copy leaves no temporary: {names:?}"
    );
}

#[test]
fn leftovers_of_killed_copies_go_with_gc() {
    let t = test_store();
    two_layer_image(&t, "two");
    let resolved = t.store.resolve("two").unwrap();
    let (shifted, _) = t.store.shifted(&resolved, SHIFT).unwrap();
    let range = t.home.path().join("layers/userns/1000000-1500000");
    let leftover = range.join(".tmp-shift-killed");
    fs::create_dir_all(leftover.join("etc")).unwrap();
    assert_eq!(t.store.remove_stale_staging().unwrap(), vec![leftover.clone()]);
    assert!(!leftover.exists());
    assert!(shifted.layers.iter().all(|l| l.is_dir()), "finished copies stay");
}
