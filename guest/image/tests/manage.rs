//! `list`, `inspect`, `remove`, replacing a name, and garbage collection of blobs and unpacked
//! layers that no image references any more (shared ones stay).

mod common;

use common::*;
use sandbox_image::ImageError;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn list_inspect_and_unknown_names() {
    let t = test_store();
    assert!(t.store.list().unwrap().is_empty());
    let a = Layer::plain(tar_of(&[E::File("a", 0o644, b"a\n")]));
    let b = Layer::gzip(tar_of(&[E::File("b", 0o644, b"b\n")]));
    let dir = t.scratch.path().join("layout");
    write_oci_layout(
        &dir,
        &[
            ("zeta", std::slice::from_ref(&a)),
            ("alpha", &[a.clone(), b.clone()]),
        ],
    );
    let zeta = t.store.import(&dir, Some("zeta")).unwrap();
    let alpha = t.store.import(&dir, Some("alpha")).unwrap();

    let list = t.store.list().unwrap();
    assert_eq!(
        list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "zeta"],
        "sorted by name"
    );
    assert_eq!(list[0], alpha);
    assert_eq!(list[1], zeta);
    assert_eq!(alpha.layers, 2);
    assert!(
        alpha.size_bytes > (a.blob.len() + b.blob.len()) as u64,
        "manifest + config + layers"
    );

    let details = t.store.inspect("alpha").unwrap();
    assert_eq!(details.digest, alpha.digest);
    assert_eq!(details.layers.len(), 2);
    assert_eq!(details.layers[1].digest, b.digest());
    assert_eq!(
        details.layers[1].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!(
        details.layers.iter().all(|l| l.unpacked.is_none()),
        "not unpacked before resolve"
    );
    assert_eq!(details.architecture, "amd64");
    assert_eq!(details.os, "linux");
    let json = serde_json::to_value(&details).unwrap();
    assert_eq!(json["config"]["cmd"], serde_json::json!(["run", "me"]));

    t.store.resolve("alpha").unwrap();
    let details = t.store.inspect("alpha").unwrap();
    assert!(details
        .layers
        .iter()
        .all(|l| l.unpacked.as_ref().is_some_and(|p| p.is_dir())));

    let err = t.store.inspect("nope").unwrap_err();
    assert!(matches!(&err, ImageError::NotFound { available, .. } if available.len() == 2));
    let msg = err.to_string();
    for needle in [
        "nope",
        "alpha",
        "zeta",
        "sandbox image ls",
        "sandbox image import",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert!(t.store.resolve("nope").is_err());
    assert!(matches!(t.store.remove("nope"), Err(ImageError::NotFound { .. })));
}

#[test]
fn remove_collects_garbage_but_keeps_shared_layers() {
    let t = test_store();
    let shared = Layer::gzip(tar_of(&[
        E::Dir("lib/", 0o755),
        E::File("lib/shared", 0o644, b"shared\n"),
    ]));
    let own = Layer::plain(tar_of(&[E::File("own", 0o644, b"own\n")]));
    let dir = t.scratch.path().join("layout");
    write_oci_layout(
        &dir,
        &[
            ("one", std::slice::from_ref(&shared)),
            ("two", &[shared.clone(), own.clone()]),
        ],
    );
    let one = t.store.import(&dir, Some("one")).unwrap();
    let two = t.store.import(&dir, Some("two")).unwrap();
    let r1 = t.store.resolve("one").unwrap();
    let r2 = t.store.resolve("two").unwrap();
    let blobs = t.home.path().join("images/blobs/sha256");
    let layers = t.home.path().join("layers/sha256");
    assert_eq!(names_in(&layers).len(), 2);

    t.store.remove("two").unwrap();
    assert_eq!(t.store.list().unwrap(), vec![one.clone()]);
    assert!(r1.layers[0].is_dir(), "the shared layer stays: image one uses it");
    assert!(!r2.layers[1].exists(), "two's own unpacked layer is gone");
    let left = names_in(&blobs);
    assert!(left.contains(&shared.digest()[7..]), "the shared blob stays");
    assert!(!left.contains(&own.digest()[7..]), "two's own blob is gone");
    assert!(!left.contains(&two.digest[7..]), "two's manifest is gone");
    assert!(left.contains(&one.digest[7..]));
    assert!(t.store.resolve("one").is_ok(), "one still resolves");

    t.store.remove("one").unwrap();
    assert!(t.store.list().unwrap().is_empty());
    assert!(
        names_in(&blobs).is_empty(),
        "no blobs left: {:?}",
        names_in(&blobs)
    );
    assert!(
        names_in(&layers).is_empty(),
        "no unpacked layers left: {:?}",
        names_in(&layers)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(t.home.path().join("images/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
}

#[test]
fn importing_an_existing_name_replaces_it() {
    let t = test_store();
    let path = t.scratch.path().join("v.tar");
    fs::write(&path, tar_of(&[E::File("version", 0o644, b"1\n")])).unwrap();
    let v1 = t.store.import(&path, Some("app")).unwrap();
    let old_layer = t.store.resolve("app").unwrap().layers[0].clone();
    fs::write(&path, tar_of(&[E::File("version", 0o644, b"2\n")])).unwrap();
    let v2 = t.store.import(&path, Some("app")).unwrap();
    assert_ne!(v1.digest, v2.digest);
    assert_eq!(
        t.store.list().unwrap(),
        vec![v2.clone()],
        "one image of that name"
    );
    let r = t.store.resolve("app").unwrap();
    assert_eq!(fs::read(r.layers[0].join("version")).unwrap(), b"2\n");
    assert!(!old_layer.exists(), "the old unpacked layer was collected");
    assert!(!names_in(&t.home.path().join("images/blobs/sha256")).contains(&v1.digest[7..]));
}

#[test]
fn the_store_is_an_oci_layout_readable_by_others() {
    let t = test_store();
    let path = t.scratch.path().join("x.tar");
    fs::write(&path, tar_of(&[E::File("x", 0o644, b"x\n")])).unwrap();
    let info = t.store.import(&path, Some("x:1")).unwrap();
    let images = t.home.path().join("images");
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(images.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(images.join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    assert_eq!(m["digest"], info.digest.as_str());
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "x:1");
    // Every blob is named by the hash of its content.
    for name in names_in(&images.join("blobs/sha256")) {
        assert_eq!(
            sha(&fs::read(images.join("blobs/sha256").join(&name)).unwrap()),
            name
        );
    }
    // And the store can be imported as an OCI layout by another store.
    let other = tempfile::tempdir().unwrap();
    let store2 = sandbox_image::Store::open_with_guest(other.path(), &t.guest).unwrap();
    let again = store2.import(&images, Some("x:1")).unwrap();
    assert_eq!(again.digest, info.digest);
}
