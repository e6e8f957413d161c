//! Every kind of input `import` reads — rootfs directory, plain tar, tar.gz, OCI layout
//! directory, OCI archive, legacy `docker save` — ends as an image whose resolved layers hold the
//! files with their modes, owners, links and devices.

mod common;

use common::*;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::Path;

fn check_resolved(t: &TestStore, name: &str, expect_layers: usize) -> sandbox_image::ResolvedImage {
    let resolved = t.store.resolve(name).unwrap();
    assert_eq!(resolved.name, name);
    assert_eq!(
        resolved.layers.len(),
        expect_layers + 1,
        "image layers plus the guest layer"
    );
    let guest = resolved.layers.last().unwrap().join("usr/bin/sandbox-guest");
    assert_eq!(
        fs::read(&guest).unwrap(),
        GUEST_CONTENT,
        "the guest layer holds the guest program"
    );
    assert_eq!(lstat(&guest).permissions().mode() & 0o7777, 0o755);
    for dir in &resolved.layers {
        assert!(
            dir.starts_with(t.home.path().join("layers")),
            "{} is in the store",
            dir.display()
        );
    }
    resolved
}

#[test]
fn import_rootfs_directory() {
    let t = test_store();
    let root = t.scratch.path().join("myroot");
    make_sample_rootfs_dir(&root);
    let info = t.import_allowing_devices(&root, None).unwrap();
    assert_eq!(info.name, "myroot", "named after the directory");
    assert_eq!(info.layers, 1);
    assert!(
        info.digest.starts_with("sha256:") && info.digest.len() == 71,
        "{}",
        info.digest
    );
    assert!(info.created.is_some(), "a rootfs import records when it was made");
    let resolved = check_resolved(&t, "myroot", 1);
    check_sample_rootfs(&resolved.layers[0], true);

    // The layer tar is deterministic: importing the same tree again gives the same layer.
    let again = t.import_allowing_devices(&root, Some("myroot2")).unwrap();
    let a = t.store.inspect("myroot").unwrap();
    let b = t.store.inspect(&again.name).unwrap();
    assert_eq!(a.layers[0].diff_id, b.layers[0].diff_id);
}

#[test]
fn import_plain_tarball() {
    let t = test_store();
    let path = t.scratch.path().join("rootfs.tar");
    fs::write(&path, tar_of(&sample_rootfs_entries())).unwrap();
    let info = t.import_allowing_devices(&path, None).unwrap();
    assert_eq!(info.name, "rootfs");
    let resolved = check_resolved(&t, "rootfs", 1);
    check_sample_rootfs(&resolved.layers[0], true);
    assert_eq!(
        t.store.inspect("rootfs").unwrap().layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn import_gzip_tarball_detected_by_content() {
    let t = test_store();
    // A misleading name: gzip is recognised by its magic bytes.
    let path = t.scratch.path().join("compressed.tar");
    fs::write(&path, gzip(&tar_of(&sample_rootfs_entries()))).unwrap();
    let info = t.import_allowing_devices(&path, Some("gz")).unwrap();
    assert_eq!(info.name, "gz");
    let resolved = check_resolved(&t, "gz", 1);
    check_sample_rootfs(&resolved.layers[0], true);
    let details = t.store.inspect("gz").unwrap();
    assert_eq!(
        details.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        details.layers[0].diff_id,
        format!("sha256:{}", sha(&tar_of(&sample_rootfs_entries())))
    );
}

#[test]
fn import_oci_layout_directory() {
    let t = test_store();
    let base = Layer::gzip(tar_of(&sample_rootfs_entries()));
    let top = Layer::plain(tar_of(&[
        E::Dir("etc/", 0o755),
        E::File("etc/top", 0o600, b"top layer\n"),
    ]));
    let dir = t.scratch.path().join("layout");
    let digests = write_oci_layout(
        &dir,
        &[
            ("first", &[base.clone(), top.clone()]),
            ("second", std::slice::from_ref(&top)),
        ],
    );

    // Several images: --name picks by ref annotation; without it, the first is taken.
    let info = t.import_allowing_devices(&dir, Some("second")).unwrap();
    assert_eq!(info.name, "second");
    assert_eq!(info.digest, digests[1], "the manifest is kept byte for byte");
    let info = t.import_allowing_devices(&dir, None).unwrap();
    assert_eq!(info.name, "first", "named by the ref annotation");
    assert_eq!(info.digest, digests[0]);
    assert_eq!(info.layers, 2);
    assert_eq!(info.created.as_deref(), Some("2024-01-02T03:04:05Z"));

    let resolved = check_resolved(&t, "first", 2);
    check_sample_rootfs(&resolved.layers[0], true);
    assert_eq!(
        fs::read(resolved.layers[1].join("etc/top")).unwrap(),
        b"top layer\n"
    );
    let config = &resolved.config;
    assert_eq!(config.env, ["PATH=/usr/bin:/bin", "FOO=bar"]);
    assert_eq!(config.entrypoint, ["/bin/entry"]);
    assert_eq!(config.cmd, ["run", "me"]);
    assert_eq!(config.working_dir.as_deref(), Some("/work"));
    assert_eq!(config.user.as_deref(), Some("1000:1000"));

    let details = t.store.inspect("first").unwrap();
    assert_eq!(details.layers[0].digest, base.digest());
    assert_eq!(details.layers[0].diff_id, base.diff_id);
    assert_eq!(details.layers[0].size_bytes, base.blob.len() as u64);
    assert_eq!(
        details.layers[0].unpacked.as_deref(),
        Some(resolved.layers[0].as_path())
    );
}

#[test]
fn import_oci_archive_tarball() {
    let t = test_store();
    let layer = Layer::plain(tar_of(&sample_rootfs_entries()));
    let dir = t.scratch.path().join("layout");
    let digests = write_oci_layout(&dir, &[("archived:1.0", std::slice::from_ref(&layer))]);
    // An OCI archive: the layout's files in a tar.
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &dir).unwrap();
    let archive = t.scratch.path().join("oci-archive.tar");
    fs::write(&archive, b.into_inner().unwrap()).unwrap();

    let before_tmp = fs::read_dir(t.home.path().join("tmp")).unwrap().count();
    let info = t.import_allowing_devices(&archive, None).unwrap();
    assert_eq!(info.name, "archived:1.0");
    assert_eq!(info.digest, digests[0]);
    let resolved = check_resolved(&t, "archived:1.0", 1);
    check_sample_rootfs(&resolved.layers[0], true);
    let details = t.store.inspect("archived:1.0").unwrap();
    let blobs: Vec<String> = fs::read_dir(t.home.path().join("images/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        blobs.len(),
        3,
        "manifest, config, one layer; not the archive itself: {blobs:?}"
    );
    assert!(blobs.contains(&layer.digest()[7..].to_string()));
    assert_eq!(details.layers.len(), 1);
    assert_eq!(
        fs::read_dir(t.home.path().join("tmp")).unwrap().count(),
        before_tmp,
        "staging removed"
    );
}

#[test]
fn import_docker_save_legacy_tarball() {
    let t = test_store();
    let base = tar_of(&sample_rootfs_entries());
    let top = tar_of(&[
        E::Dir("etc/", 0o755),
        E::File("etc/motd", 0o644, b"hello from docker\n"),
    ]);
    // Three layers, the third a symlink to the first's layer.tar, as `docker save` writes it.
    let archive = docker_save_legacy(
        "example/app:1.2",
        &[base.clone(), top.clone(), base.clone()],
        true,
    );
    let path = t.scratch.path().join("app.tar");
    fs::write(&path, archive).unwrap();

    let info = t.import_allowing_devices(&path, None).unwrap();
    assert_eq!(info.name, "example/app:1.2", "named by RepoTags[0]");
    assert_eq!(info.layers, 3);
    let resolved = check_resolved(&t, "example/app:1.2", 3);
    check_sample_rootfs(&resolved.layers[0], true);
    assert_eq!(
        fs::read(resolved.layers[1].join("etc/motd")).unwrap(),
        b"hello from docker\n"
    );
    assert_eq!(
        resolved.layers[0], resolved.layers[2],
        "the same layer twice is one directory"
    );
    assert_eq!(resolved.config.cmd, ["run", "me"]);

    let details = t.store.inspect("example/app:1.2").unwrap();
    assert_eq!(
        details.media_type, "application/vnd.oci.image.manifest.v1+json",
        "converted to an OCI manifest"
    );
    assert_eq!(details.layers[0].diff_id, format!("sha256:{}", sha(&base)));
    assert_eq!(
        details.layers[0].digest, details.layers[0].diff_id,
        "layers are kept as the uncompressed tars"
    );
}

#[test]
fn docker_save_with_mismatched_diff_id_is_refused() {
    let t = test_store();
    let base = tar_of(&sample_rootfs_entries());
    let mut archive = docker_save_legacy("bad:1", &[base], false);
    // Rewrite the config's diff_id in place: same length, different digest.
    let wanted = format!("sha256:{}", sha(&tar_of(&sample_rootfs_entries())));
    let pos = archive
        .windows(wanted.len())
        .position(|w| w == wanted.as_bytes())
        .unwrap();
    archive[pos + 7] = if archive[pos + 7] == b'0' { b'1' } else { b'0' };
    // The config's own name no longer matches its content either; fix that check out of the way
    // by importing from an extracted directory with a non-content-addressed config name.
    let dir = t.scratch.path().join("extracted");
    tar::Archive::new(&archive[..]).unpack(&dir).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let config_name = manifest[0]["Config"].as_str().unwrap().to_string();
    fs::rename(dir.join(&config_name), dir.join("config.json")).unwrap();
    let manifest = fs::read_to_string(dir.join("manifest.json"))
        .unwrap()
        .replace(&config_name, "config.json");
    fs::write(dir.join("manifest.json"), manifest).unwrap();

    let before = snapshot(t.home.path());
    let err = t.import_allowing_devices(&dir, None).unwrap_err().to_string();
    assert!(err.contains("diff_id"), "{err}");
    assert_same_tree(&before, &snapshot(t.home.path()));
}

/// Builds the sample rootfs as a real directory tree (owners, modes, links, devices, mtimes).
fn make_sample_rootfs_dir(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    let tool = root.join("bin/tool");
    fs::write(&tool, b"#!/bin/sh\necho tool\n").unwrap();
    lchown(&tool, Some(1000), Some(1001)).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).unwrap();
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(MTIME);
    fs::File::options()
        .write(true)
        .open(&tool)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    symlink("/bin/tool", root.join("bin/sh")).unwrap();
    fs::hard_link(&tool, root.join("bin/tool2")).unwrap();
    fs::write(root.join("etc/conf"), b"key=value\n").unwrap();
    fs::set_permissions(root.join("etc/conf"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    mknod(&root.join("dev/null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    mknod(&root.join("run.fifo"), libc::S_IFIFO | 0o600, 0);
}

fn mknod(path: &Path, mode: u32, dev: u64) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string, alive for the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

#[test]
fn import_multi_platform_index_takes_linux_amd64() {
    let t = test_store();
    let dir = t.scratch.path().join("multi");
    let amd = Layer::plain(tar_of(&[E::File("arch", 0o644, b"amd64\n")]));
    let arm = Layer::plain(tar_of(&[E::File("arch", 0o644, b"arm64\n")]));
    let digests = write_oci_layout(
        &dir,
        &[
            ("arm", std::slice::from_ref(&arm)),
            ("amd", std::slice::from_ref(&amd)),
        ],
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut platforms = Vec::new();
    for (desc, arch) in index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["arm64", "amd64"])
    {
        let mut d = desc.clone();
        d.as_object_mut().unwrap().remove("annotations");
        d["platform"] = serde_json::json!({ "architecture": arch, "os": "linux" });
        platforms.push(d);
    }
    let write_top = |manifests: Vec<serde_json::Value>| {
        let nested = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests
        }))
        .unwrap();
        let hex = sha(&nested);
        fs::write(dir.join("blobs/sha256").join(&hex), &nested).unwrap();
        let top = serde_json::json!({ "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": nested.len(),
            "annotations": { "org.opencontainers.image.ref.name": "multi:latest" }
        }]});
        fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    };
    write_top(platforms.clone());
    let info = t.store.import(&dir, None).unwrap();
    assert_eq!(info.name, "multi:latest");
    assert_eq!(info.digest, digests[1], "the linux/amd64 manifest");
    let resolved = t.store.resolve("multi:latest").unwrap();
    assert_eq!(fs::read(resolved.layers[0].join("arch")).unwrap(), b"amd64\n");

    // Without a linux/amd64 entry: refused, listing what there is.
    write_top(vec![platforms[0].clone()]);
    let before = snapshot(t.home.path());
    let err = t.store.import(&dir, Some("other")).unwrap_err().to_string();
    assert!(
        err.contains("linux/arm64") && err.contains("linux/amd64"),
        "{err}"
    );
    assert_same_tree(&before, &snapshot(t.home.path()));
}

#[test]
fn import_docker_save_with_oci_layout_inside() {
    let t = test_store();
    // Newer `docker save`: an OCI layout plus a manifest.json whose paths point into blobs/.
    let dir = t.scratch.path().join("save");
    let layer = Layer::plain(tar_of(&sample_rootfs_entries()));
    let digests = write_oci_layout(&dir, &[("latest", std::slice::from_ref(&layer))]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(&digests[0][7..])).unwrap()).unwrap();
    let config_hex = manifest["config"]["digest"].as_str().unwrap()[7..].to_string();
    let docker_manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{config_hex}"),
        "RepoTags": ["newer/docker:27"],
        "Layers": [format!("blobs/sha256/{}", &layer.digest()[7..])]
    }]);
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&docker_manifest).unwrap(),
    )
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &dir).unwrap();
    let path = t.scratch.path().join("newer.tar");
    fs::write(&path, b.into_inner().unwrap()).unwrap();

    let info = t.import_allowing_devices(&path, None).unwrap();
    assert_eq!(info.name, "newer/docker:27", "RepoTags[0] names it");
    let resolved = t.store.resolve("newer/docker:27").unwrap();
    check_sample_rootfs(&resolved.layers[0], true);
    assert_eq!(resolved.config.cmd, ["run", "me"]);
}

#[test]
fn rootfs_tarball_with_its_own_manifest_json_is_a_rootfs() {
    let t = test_store();
    // A root file system may hold files named like an image archive's, with other content.
    let path = t.scratch.path().join("webapp.tar");
    fs::write(
        &path,
        tar_of(&[
            E::File(
                "manifest.json",
                0o644,
                br#"{"name": "my web app", "version": "1.0"}"#,
            ),
            E::File("index.json", 0o644, br#"{"pages": []}"#),
            E::File("oci-layout", 0o644, b"not json"),
        ]),
    )
    .unwrap();
    let info = t.store.import(&path, None).unwrap();
    assert_eq!((info.name.as_str(), info.layers), ("webapp", 1));
    let resolved = t.store.resolve("webapp").unwrap();
    assert_eq!(
        fs::read(resolved.layers[0].join("index.json")).unwrap(),
        br#"{"pages": []}"#
    );
}

#[test]
fn rootfs_directory_with_its_own_manifest_json_is_a_rootfs() {
    let t = test_store();
    let dir = t.scratch.path().join("webdir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("manifest.json"), br#"{"name": "my web app"}"#).unwrap();
    fs::write(dir.join("oci-layout"), b"not json").unwrap();
    let info = t.store.import(&dir, None).unwrap();
    assert_eq!((info.name.as_str(), info.layers), ("webdir", 1));
    let resolved = t.store.resolve("webdir").unwrap();
    assert_eq!(
        fs::read(resolved.layers[0].join("oci-layout")).unwrap(),
        b"not json"
    );
}
