//! Hostile inputs: FIFOs, devices and links where import expects a regular file are refused at
//! once (never opened to block, never read without end), blobs are read no further than their
//! declared size, and device nodes and FIFOs inside layers need the explicit opt-in. Each
//! refusal leaves the store exactly as it was.

mod common;

use common::*;
use sandbox_image::ImportOptions;
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How long an import of a hostile input may take before the test calls it a hang.
const HANG: u64 = 20;

/// Imports `path` with `options` on a thread of its own, expects a refusal (within [`HANG`]
/// seconds) whose message contains every one of `needles`, and checks the store did not change.
fn refused(t: &TestStore, path: &Path, options: ImportOptions, needles: &[&str]) -> String {
    let before = snapshot(t.home.path());
    let store = t.store.clone();
    let input = path.to_path_buf();
    let err = within(HANG, "the import of a hostile input", move || {
        store
            .import_with(&input, &options)
            .map(|i| i.name)
            .map_err(|e| e.to_string())
    })
    .expect_err("the import must be refused");
    for n in needles {
        assert!(err.contains(n), "the error should mention {n:?}: {err}");
    }
    assert_same_tree(&before, &snapshot(t.home.path()));
    assert_eq!(
        fs::read_dir(t.home.path().join("tmp")).unwrap().count(),
        0,
        "no staging left"
    );
    err
}

fn plain() -> ImportOptions {
    ImportOptions::default()
}

fn allowing_devices() -> ImportOptions {
    ImportOptions {
        allow_devices: true,
        ..ImportOptions::default()
    }
}

/// What a `docker save` member is made of instead of a regular file.
#[derive(Clone, Copy)]
enum Member {
    Fifo,
    Symlink(&'static str),
    CharDevice(u32, u32),
}

fn append_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(MTIME);
    b.append_data(&mut h, path, data).unwrap();
}

fn append_member(b: &mut tar::Builder<Vec<u8>>, path: &str, member: Member) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(0);
    h.set_mtime(MTIME);
    match member {
        Member::Fifo => {
            h.set_entry_type(tar::EntryType::Fifo);
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        }
        Member::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, path, target).unwrap();
        }
        Member::CharDevice(major, minor) => {
            h.set_entry_type(tar::EntryType::Char);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        }
    }
}

/// A one-layer `docker save` tarball whose config member (`config: true`) or layer member is
/// `member`; returns the tarball and that member's name.
fn docker_save_with(member: Member, config: bool) -> (Vec<u8>, String) {
    let layer = tar_of(&[E::File("hello", 0o644, b"hi\n")]);
    let config_bytes = config_json(&[Layer::plain(layer.clone())]);
    let config_name = format!("{}.json", sha(&config_bytes));
    let layer_name = "0123/layer.tar".to_string();
    let mut b = tar::Builder::new(Vec::new());
    if config {
        append_file(&mut b, &layer_name, &layer);
        append_member(&mut b, &config_name, member);
    } else {
        append_member(&mut b, &layer_name, member);
        append_file(&mut b, &config_name, &config_bytes);
    }
    let manifest =
        serde_json::json!([{ "Config": config_name, "RepoTags": ["evil:1"], "Layers": [layer_name] }]);
    append_file(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    let victim = if config { config_name } else { layer_name };
    (b.into_inner().unwrap(), victim)
}

/// The same image as an unpacked `docker save` directory, with its config made by `make`.
fn docker_save_dir_with_config(dir: &Path, make: impl FnOnce(&Path)) -> PathBuf {
    let layer = tar_of(&[E::File("hello", 0o644, b"hi\n")]);
    let config_bytes = config_json(&[Layer::plain(layer.clone())]);
    let config_name = format!("{}.json", sha(&config_bytes));
    fs::create_dir_all(dir.join("0123")).unwrap();
    fs::write(dir.join("0123/layer.tar"), &layer).unwrap();
    let manifest =
        serde_json::json!([{ "Config": config_name, "RepoTags": ["evil:1"], "Layers": ["0123/layer.tar"] }]);
    fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    let config = dir.join(&config_name);
    make(&config);
    config
}

#[test]
fn fifo_config_member_of_a_docker_save_tarball_is_refused_quickly() {
    let t = test_store();
    let (tarball, config) = docker_save_with(Member::Fifo, true);
    let path = t.scratch.path().join("evil.tar");
    fs::write(&path, tarball).unwrap();
    refused(
        &t,
        &path,
        plain(),
        &["evil.tar", &config, "is a FIFO, not a regular file"],
    );
    // Allowing devices in layers does not make an archive member that is a FIFO acceptable.
    refused(&t, &path, allowing_devices(), &["is a FIFO, not a regular file"]);
}

#[test]
fn fifo_config_member_of_a_docker_save_directory_is_refused_quickly() {
    let t = test_store();
    let dir = t.scratch.path().join("saved");
    let config = docker_save_dir_with_config(&dir, mkfifo);
    refused(
        &t,
        &dir,
        plain(),
        &[&config.display().to_string(), "is a FIFO, not a regular file"],
    );
}

#[test]
fn members_that_are_or_link_to_dev_zero_are_refused() {
    let t = test_store();
    let path = t.scratch.path().join("zero.tar");

    let (tarball, config) = docker_save_with(Member::Symlink("/dev/zero"), true);
    fs::write(&path, tarball).unwrap();
    refused(&t, &path, plain(), &["zero.tar", &config, "absolute symlink"]);

    let (tarball, config) = docker_save_with(Member::Symlink("../../../../../../../dev/zero"), true);
    fs::write(&path, tarball).unwrap();
    refused(&t, &path, plain(), &[&config, "symlink out of the archive"]);

    let (tarball, layer) = docker_save_with(Member::CharDevice(1, 5), false);
    fs::write(&path, tarball).unwrap();
    refused(
        &t,
        &path,
        allowing_devices(),
        &[&layer, "is a character device, not a regular file"],
    );

    // The same in a directory the user gives.
    let dir = t.scratch.path().join("saved");
    let config = docker_save_dir_with_config(&dir, |p| symlink("/dev/zero", p).unwrap());
    let name = config.file_name().unwrap().to_string_lossy().into_owned();
    refused(&t, &dir, plain(), &[&name, "absolute symlink"]);
}

#[test]
fn inputs_that_are_not_files_or_directories_are_refused_quickly() {
    let t = test_store();
    refused(
        &t,
        Path::new("/dev/zero"),
        plain(),
        &["/dev/zero", "is a character device, not a regular file"],
    );
    let fifo = t.scratch.path().join("pipe.tar");
    mkfifo(&fifo);
    refused(&t, &fifo, plain(), &["pipe.tar", "is a FIFO, not a regular file"]);
    // A link the user made to their tarball is followed; a link to a FIFO is still a FIFO.
    let link = t.scratch.path().join("link.tar");
    symlink(&fifo, &link).unwrap();
    refused(&t, &link, plain(), &["link.tar", "is a FIFO"]);
}

/// An OCI layout at `dir` whose one layer is `blob`, declared `declared` bytes long.
fn oci_layout_with_layer(dir: &Path, blob: &[u8], declared: u64) -> String {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let layer = Layer::plain(blob.to_vec());
    let (config_digest, config_size) = put_blob(dir, &config_json(std::slice::from_ref(&layer)));
    let (layer_digest, _) = put_blob(dir, blob);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": layer.media_type, "digest": layer_digest, "size": declared }]
    }))
    .unwrap();
    let (digest, size) = put_blob(dir, &manifest);
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size
    }]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    layer_digest
}

#[test]
fn oci_blob_larger_than_its_descriptor_is_refused_without_reading_it() {
    let t = test_store();
    let big = vec![0x5au8; 4 << 20];
    let dir = t.scratch.path().join("layout");
    let digest = oci_layout_with_layer(&dir, &big, 10);
    let err = refused(&t, &dir, plain(), &[&digest, "its descriptor says 10"]);
    // Refused from its size on disk, before a byte of it was copied.
    assert!(err.contains(&format!("is {} bytes", big.len())), "{err}");
}

#[test]
fn oci_blob_or_index_that_is_a_fifo_is_refused_quickly() {
    let t = test_store();
    let dir = t.scratch.path().join("layout");
    let tar = tar_of(&[E::File("a", 0o644, b"a\n")]);
    let digest = oci_layout_with_layer(&dir, &tar, tar.len() as u64);
    let blob = dir.join("blobs/sha256").join(&digest[7..]);
    fs::remove_file(&blob).unwrap();
    mkfifo(&blob);
    refused(&t, &dir, plain(), &[&digest, "is a FIFO, not a regular file"]);

    fs::remove_file(&blob).unwrap();
    fs::write(&blob, &tar).unwrap();
    fs::remove_file(dir.join("index.json")).unwrap();
    mkfifo(&dir.join("index.json"));
    refused(
        &t,
        &dir,
        plain(),
        &["index.json", "is a FIFO, not a regular file"],
    );
}

#[test]
fn device_entries_in_a_layer_need_the_opt_in() {
    let t = test_store();
    let path = t.scratch.path().join("devs.tar");
    fs::write(
        &path,
        tar_of(&[
            E::Dir("dev/", 0o755),
            E::Char("dev/null", 1, 3),
            E::File("hello", 0o644, b"hi\n"),
        ]),
    )
    .unwrap();
    refused(
        &t,
        &path,
        plain(),
        &["devs.tar", "dev/null", "a character device", "--allow-devices"],
    );
    let info = t.import_allowing_devices(&path, None).unwrap();
    let layer = &t.store.resolve(&info.name).unwrap().layers[0];
    let null = lstat(&layer.join("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
}

#[test]
fn fifo_and_device_entries_in_image_layers_need_the_opt_in() {
    let t = test_store();
    let dir = t.scratch.path().join("layout");
    write_oci_layout(&dir, &[("fifo", &[Layer::gzip(tar_of(&[E::Fifo("run/pipe")]))])]);
    refused(&t, &dir, plain(), &["run/pipe", "a FIFO", "--allow-devices"]);
    t.import_allowing_devices(&dir, None).unwrap();
    assert!(
        lstat(&t.store.resolve("fifo").unwrap().layers[0].join("run/pipe"))
            .file_type()
            .is_fifo()
    );
}

#[test]
fn whiteout_devices_need_no_opt_in() {
    // A layer made from an overlayfs upper directory carries whiteouts as 0/0 character
    // devices: they open nothing and stay accepted, as `.wh.` entries do.
    let t = test_store();
    let path = t.scratch.path().join("upper.tar");
    fs::write(
        &path,
        tar_of(&[E::Char("gone", 0, 0), E::File(".wh.also-gone", 0o644, b"")]),
    )
    .unwrap();
    let info = t.store.import(&path, None).unwrap();
    let layer = &t.store.resolve(&info.name).unwrap().layers[0];
    assert!(is_whiteout(&layer.join("gone")));
    assert!(is_whiteout(&layer.join("also-gone")));
}

#[test]
fn rootfs_directory_with_device_nodes_needs_the_opt_in() {
    let t = test_store();
    let root = t.scratch.path().join("withdev");
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::write(root.join("hello"), b"hi\n").unwrap();
    mkfifo(&root.join("dev/pipe"));
    refused(
        &t,
        &root,
        plain(),
        &["withdev", "dev/pipe", "a FIFO", "--allow-devices"],
    );
    let info = t.import_allowing_devices(&root, None).unwrap();
    let layer = &t.store.resolve(&info.name).unwrap().layers[0];
    assert!(lstat(&layer.join("dev/pipe")).file_type().is_fifo());
    assert_eq!(fs::read(layer.join("hello")).unwrap(), b"hi\n");
}
