//! Damaged or hostile inputs are refused with the reason, naming the file or digest, and the
//! store is left exactly as it was: no new blobs, no staging directory, same index.

mod common;

use common::*;
use std::fs;
use std::path::Path;

/// A store that already holds one image, so "unchanged" covers existing content too.
fn populated_store() -> TestStore {
    let t = test_store();
    let path = t.scratch.path().join("existing.tar");
    fs::write(&path, tar_of(&[E::File("keep", 0o644, b"keep me\n")])).unwrap();
    t.store.import(&path, None).unwrap();
    t.store.resolve("existing").unwrap();
    t
}

/// Imports `path`, expects a refusal whose message contains every one of `needles`, and checks
/// the store did not change.
fn refused(t: &TestStore, path: &Path, name: Option<&str>, needles: &[&str]) -> String {
    let before = snapshot(t.home.path());
    let err = t
        .store
        .import(path, name)
        .expect_err("the import must be refused")
        .to_string();
    for n in needles {
        assert!(err.contains(n), "the error should mention {n:?}: {err}");
    }
    assert_same_tree(&before, &snapshot(t.home.path()));
    assert_eq!(
        fs::read_dir(t.home.path().join("tmp")).unwrap().count(),
        0,
        "no staging left"
    );
    assert_eq!(t.store.list().unwrap().len(), 1);
    err
}

fn rootfs_tar() -> Vec<u8> {
    tar_of(&[
        E::Dir("bin/", 0o755),
        E::File("bin/a", 0o755, &[b'a'; 1024]),
        E::File("bin/b", 0o644, &[b'b'; 100]),
        E::File("bin/c", 0o644, b"c\n"),
    ])
}

#[test]
fn flipped_byte_in_an_oci_layer_blob_is_refused_naming_the_digest() {
    let t = populated_store();
    let layer = Layer::gzip(rootfs_tar());
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("flipped", std::slice::from_ref(&layer))]);
    let blob = dir.join("blobs/sha256").join(&layer.digest()[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&blob, bytes).unwrap();
    refused(&t, &dir, None, &[&layer.digest(), "hashes to"]);
}

#[test]
fn wrong_size_in_a_descriptor_is_refused() {
    let t = populated_store();
    let layer = Layer::plain(rootfs_tar());
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("short", std::slice::from_ref(&layer))]);
    let blob = dir.join("blobs/sha256").join(&layer.digest()[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    bytes.extend_from_slice(&[0u8; 512]);
    fs::write(&blob, bytes).unwrap();
    refused(&t, &dir, None, &[&layer.digest(), "bytes"]);
}

#[test]
fn missing_blob_is_refused() {
    let t = populated_store();
    let layer = Layer::plain(rootfs_tar());
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("missing", std::slice::from_ref(&layer))]);
    fs::remove_file(dir.join("blobs/sha256").join(&layer.digest()[7..])).unwrap();
    refused(&t, &dir, None, &[&layer.digest(), "missing"]);
}

#[test]
fn config_diff_id_mismatch_in_an_oci_layout_is_refused() {
    let t = populated_store();
    let mut layer = Layer::plain(rootfs_tar());
    layer.diff_id = format!("sha256:{}", sha(b"something else"));
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("lying", std::slice::from_ref(&layer))]);
    refused(&t, &dir, None, &["diff_id", &layer.diff_id]);
}

#[test]
fn tarball_cut_mid_entry_is_refused() {
    let t = populated_store();
    let full = rootfs_tar();
    // Inside bin/a's 1024 data bytes (header of bin/ at 0, of bin/a at 512, data from 1024).
    let path = t.scratch.path().join("cut.tar");
    fs::write(&path, &full[..1024 + 700]).unwrap();
    refused(&t, &path, None, &["cut.tar", "truncated"]);
}

#[test]
fn tarball_cut_exactly_at_a_header_boundary_is_refused() {
    let t = populated_store();
    let full = rootfs_tar();
    // bin/ (512) + bin/a header (512) + data (1024): the next header starts at 2048. A reader that
    // stops at EOF would see a shorter but valid-looking archive here.
    let cut = 2048;
    assert!(
        full[cut..cut + 512].iter().any(|&b| b != 0),
        "a header starts at the cut"
    );
    let path = t.scratch.path().join("boundary.tar");
    fs::write(&path, &full[..cut]).unwrap();
    refused(&t, &path, None, &["boundary.tar", "truncated"]);

    // Every other header boundary too, including right after the first end-of-archive block.
    let end = full.len();
    for cut in (512..end).step_by(512) {
        let tail_ok = full[..cut].len() >= 1024 && full[cut - 1024..cut].iter().all(|&b| b == 0);
        if tail_ok && full[cut - 1536..cut - 1024].iter().all(|&b| b == 0) {
            continue; // complete: both end blocks present (and maybe padding)
        }
        if tail_ok {
            break; // from here on the archive is complete
        }
        fs::write(&path, &full[..cut]).unwrap();
        refused(&t, &path, None, &["truncated"]);
    }
}

#[test]
fn truncated_layer_with_a_matching_digest_is_refused() {
    // The blob's digest is right (it was computed over the cut bytes), but the tar is incomplete.
    let t = populated_store();
    let full = rootfs_tar();
    let layer = Layer {
        blob: full[..2048].to_vec(),
        media_type: "application/vnd.oci.image.layer.v1.tar",
        diff_id: format!("sha256:{}", sha(&full[..2048])),
    };
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("cut", std::slice::from_ref(&layer))]);
    refused(&t, &dir, None, &["truncated", &layer.digest()[..19]]);
}

#[test]
fn bad_gzip_is_refused() {
    let t = populated_store();
    let mut gz = gzip(&rootfs_tar());
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 8] {
        *b ^= 0xff;
    }
    let path = t.scratch.path().join("bad.tar.gz");
    fs::write(&path, &gz).unwrap();
    refused(&t, &path, None, &["bad.tar.gz"]);

    // A gzip stream cut short.
    let gz = gzip(&rootfs_tar());
    fs::write(&path, &gz[..gz.len() - 20]).unwrap();
    refused(&t, &path, None, &["bad.tar.gz"]);
}

#[test]
fn zstd_is_refused_as_not_supported() {
    let t = populated_store();
    let path = t.scratch.path().join("layer.tar.zst");
    fs::write(&path, [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]).unwrap();
    refused(&t, &path, None, &["zstd", "not supported"]);
}

#[test]
fn entries_escaping_the_layer_are_refused() {
    let t = populated_store();
    let path = t.scratch.path().join("evil.tar");
    fs::write(&path, tar_of(&[E::RawFile("../escape", b"x")])).unwrap();
    refused(&t, &path, None, &["../escape", ".."]);
    fs::write(&path, tar_of(&[E::RawFile("/etc/evil", b"x")])).unwrap();
    refused(&t, &path, None, &["/etc/evil", "absolute"]);
    let outside = t.scratch.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target: &'static str = Box::leak(outside.display().to_string().into_boxed_str());
    fs::write(
        &path,
        tar_of(&[E::Symlink("link", target), E::File("link/planted", 0o644, b"x")]),
    )
    .unwrap();
    refused(&t, &path, None, &["link/planted", "symlink"]);
    assert!(!outside.join("planted").exists());
    fs::write(&path, tar_of(&[E::Hardlink("h", "../../etc/passwd")])).unwrap();
    refused(&t, &path, None, &["h", ".."]);
}

#[test]
fn not_a_tarball_and_missing_inputs_are_explained() {
    let t = populated_store();
    let path = t.scratch.path().join("notes.txt");
    fs::write(
        &path,
        "just some text, long enough to fill a header block or not\n".repeat(20),
    )
    .unwrap();
    refused(
        &t,
        &path,
        None,
        &["notes.txt", "not a tar archive", "docker save"],
    );
    refused(
        &t,
        &t.scratch.path().join("nope"),
        None,
        &["nope", "does not exist"],
    );
    let path = t.scratch.path().join("ok.tar");
    fs::write(&path, rootfs_tar()).unwrap();
    refused(&t, &path, Some("bad name"), &["bad name", "not allowed"]);
}
