//! Helpers shared by the store tests: building tars, OCI layouts and `docker save` archives by
//! hand, a store per test in its own temporary `SANDBOX_HOME`, and a full listing of a store
//! tree to prove a refused import changed nothing.

#![allow(dead_code)]

use sandbox_image::{ImageError, ImageInfo, ImportOptions, Store};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A test's store and its scratch space; both vanish with it.
pub struct TestStore {
    pub home: tempfile::TempDir,
    pub scratch: tempfile::TempDir,
    pub guest: PathBuf,
    pub store: Store,
}

/// The content of the stand-in guest program (any file works for the store).
pub const GUEST_CONTENT: &[u8] = b"#!/bin/sh\necho fake sandbox-guest\n";

impl TestStore {
    /// Imports `path` allowing device nodes and FIFOs in its layers (the sample rootfs has
    /// both), as `sandbox image import --allow-devices` does.
    pub fn import_allowing_devices(&self, path: &Path, name: Option<&str>) -> Result<ImageInfo, ImageError> {
        let options = ImportOptions {
            name: name.map(str::to_string),
            allow_devices: true,
        };
        self.store.import_with(path, &options)
    }
}

/// Runs `f` on a thread of its own and returns its result, failing the test when it takes more
/// than `secs` seconds: a hang is a regression to report, not a test run to wedge.
pub fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {secs} s: it hangs")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string, alive for the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub fn test_store() -> TestStore {
    assert!(
        unsafe_is_root(),
        "the image store tests need root (they unpack layers with owners and device nodes): run them as root"
    );
    let home = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let guest = scratch.path().join("sandbox-guest");
    fs::write(&guest, GUEST_CONTENT).unwrap();
    let store = Store::open_with_guest(home.path(), &guest).unwrap();
    TestStore {
        home,
        scratch,
        guest,
        store,
    }
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// One entry of a hand-made tar.
#[derive(Clone, Debug)]
pub enum E {
    Dir(&'static str, u32),
    File(&'static str, u32, &'static [u8]),
    /// Path, mode, uid, gid, content.
    Owned(&'static str, u32, u64, u64, &'static [u8]),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Char(&'static str, u32, u32),
    Fifo(&'static str),
    /// A raw name written as is (for `..` and absolute paths the tar crate would refuse).
    RawFile(&'static str, &'static [u8]),
}

/// The mtime given to every hand-made entry.
pub const MTIME: u64 = 1_600_000_000;

pub fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Owned(p, mode, uid, gid, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Char(p, major, minor) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o600);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::RawFile(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                let name = &mut h.as_old_mut().name;
                name[..p.len()].copy_from_slice(p.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A layer blob as it goes into an OCI layout.
#[derive(Clone, Debug)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

impl Layer {
    pub fn plain(tar: Vec<u8>) -> Layer {
        Layer {
            diff_id: format!("sha256:{}", sha(&tar)),
            blob: tar,
            media_type: "application/vnd.oci.image.layer.v1.tar",
        }
    }

    pub fn gzip(tar: Vec<u8>) -> Layer {
        Layer {
            diff_id: format!("sha256:{}", sha(&tar)),
            blob: gzip(&tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }

    pub fn digest(&self) -> String {
        format!("sha256:{}", sha(&self.blob))
    }
}

/// An image config naming `layers`, with a recognisable run configuration.
pub fn config_json(layers: &[Layer]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "FOO=bar"],
            "Entrypoint": ["/bin/entry"],
            "Cmd": ["run", "me"],
            "WorkingDir": "/work",
            "User": "1000:1000"
        },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() }
    }))
    .unwrap()
}

/// Writes `bytes` as `blobs/sha256/<hex>` under `dir`; returns (digest, size).
pub fn put_blob(dir: &Path, bytes: &[u8]) -> (String, u64) {
    let hex = sha(bytes);
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    (format!("sha256:{hex}"), bytes.len() as u64)
}

/// Writes an OCI image layout at `dir` holding one image per `(ref name, layers)`; returns the
/// manifest digests.
pub fn write_oci_layout(dir: &Path, images: &[(&str, &[Layer])]) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descriptors = Vec::new();
    let mut digests = Vec::new();
    for (name, layers) in images {
        let (config_digest, config_size) = put_blob(dir, &config_json(layers));
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|l| {
                let (digest, size) = put_blob(dir, &l.blob);
                serde_json::json!({ "mediaType": l.media_type, "digest": digest, "size": size })
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
            "layers": layer_descs
        }))
        .unwrap();
        let (digest, size) = put_blob(dir, &manifest);
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": { "org.opencontainers.image.ref.name": name }
        }));
        digests.push(digest);
    }
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": descriptors });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    digests
}

/// A legacy `docker save` tarball (`manifest.json`, `<id>/layer.tar`, `<config hex>.json`) of
/// one image tagged `tag` whose layers are the uncompressed `tars`. When `dup_last` is set, the
/// last layer is stored as a symlink to the first one's directory, as Docker does for a layer
/// repeated in an image.
pub fn docker_save_legacy(tag: &str, tars: &[Vec<u8>], dup_last: bool) -> Vec<u8> {
    let layers: Vec<Layer> = tars.iter().cloned().map(Layer::plain).collect();
    let config = config_json(&layers);
    let config_name = format!("{}.json", sha(&config));
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(MTIME);
        b.append_data(&mut h, path, data).unwrap();
    };
    let mut layer_paths = Vec::new();
    for (i, tar) in tars.iter().enumerate() {
        let id = sha(format!("layer-id-{i}").as_bytes());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, format!("{id}/"), std::io::empty()).unwrap();
        add(&mut b, &format!("{id}/VERSION"), b"1.0");
        add(&mut b, &format!("{id}/json"), b"{}");
        if dup_last && i == tars.len() - 1 && i > 0 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            let first = sha(b"layer-id-0");
            assert_eq!(tar, &tars[0], "a duplicated layer must repeat the first one");
            b.append_link(&mut h, format!("{id}/layer.tar"), format!("../{first}/layer.tar"))
                .unwrap();
        } else {
            add(&mut b, &format!("{id}/layer.tar"), tar);
        }
        layer_paths.push(format!("{id}/layer.tar"));
    }
    add(&mut b, &config_name, &config);
    let manifest = serde_json::json!([{ "Config": config_name, "RepoTags": [tag], "Layers": layer_paths }]);
    add(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

/// Every path under `root` with its kind, size, mode, owner and (for files) content hash or
/// (for symlinks) target: equal listings mean an unchanged tree.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for path in names {
        let m = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let what = if m.is_dir() {
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("symlink -> {}", fs::read_link(&path).unwrap().display())
        } else if m.is_file() {
            format!("file {} bytes sha256:{}", m.len(), sha(&fs::read(&path).unwrap()))
        } else {
            format!("special rdev {}", m.rdev())
        };
        out.insert(
            rel,
            format!("{what} mode {:o} owner {}:{}", m.mode(), m.uid(), m.gid()),
        );
        if m.is_dir() {
            walk(root, &path, out);
        }
    }
}

/// Asserts two snapshots are equal, printing what differs.
pub fn assert_same_tree(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("removed: {k} ({v})")),
            Some(w) if w != v => diffs.push(format!("changed: {k}: {v} -> {w}")),
            _ => {}
        }
    }
    for (k, v) in after {
        if !before.contains_key(k) {
            diffs.push(format!("added: {k} ({v})"));
        }
    }
    assert!(diffs.is_empty(), "the store changed:\n{}", diffs.join("\n"));
}

/// The stat of `path` without following symlinks.
pub fn lstat(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `path` is an overlayfs whiteout (character device 0/0).
pub fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

/// Reads an xattr of `path` (not following symlinks); `None` when absent.
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 64];
    // SAFETY: valid C strings and a live buffer whose length is passed.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        None
    } else {
        buf.truncate(rc as usize);
        Some(buf)
    }
}

/// The rootfs every import-kind test uses, and the checks each import must pass.
pub fn sample_rootfs_entries() -> Vec<E> {
    vec![
        E::Dir("bin/", 0o755),
        E::Owned("bin/tool", 0o4755, 1000, 1001, b"#!/bin/sh\necho tool\n"),
        E::Symlink("bin/sh", "/bin/tool"),
        E::Hardlink("bin/tool2", "bin/tool"),
        E::Dir("etc/", 0o755),
        E::File("etc/conf", 0o640, b"key=value\n"),
        E::Dir("tmp/", 0o1777),
        E::Dir("dev/", 0o755),
        E::Char("dev/null", 1, 3),
        E::Fifo("run.fifo"),
    ]
}

/// Checks `dir` (an unpacked layer or a flattened tree) holds the sample rootfs as made.
pub fn check_sample_rootfs(dir: &Path, check_owner_of_tool: bool) {
    let tool = lstat(&dir.join("bin/tool"));
    assert!(tool.is_file());
    assert_eq!(tool.mode() & 0o7777, 0o4755, "bin/tool mode (setuid kept)");
    if check_owner_of_tool {
        assert_eq!((tool.uid(), tool.gid()), (1000, 1001), "bin/tool owner");
    }
    assert_eq!(tool.mtime(), MTIME as i64, "bin/tool mtime");
    assert_eq!(fs::read(dir.join("bin/tool")).unwrap(), b"#!/bin/sh\necho tool\n");
    let sh = lstat(&dir.join("bin/sh"));
    assert!(sh.file_type().is_symlink());
    assert_eq!(fs::read_link(dir.join("bin/sh")).unwrap(), Path::new("/bin/tool"));
    let tool2 = lstat(&dir.join("bin/tool2"));
    assert_eq!(tool2.ino(), tool.ino(), "bin/tool2 is a hard link of bin/tool");
    assert_eq!(lstat(&dir.join("etc/conf")).mode() & 0o7777, 0o640);
    assert_eq!(lstat(&dir.join("tmp")).mode() & 0o7777, 0o1777);
    let null = lstat(&dir.join("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert!(lstat(&dir.join("run.fifo")).file_type().is_fifo());
}
