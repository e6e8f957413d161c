//! The default image, built from the host's real busybox-static on first use.

mod common;

use common::*;
use sandbox_image::DEFAULT_IMAGE;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn require_busybox_static() {
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list-full")
        .output();
    assert!(
        out.is_ok_and(|o| o.status.success()),
        "/bin/busybox is missing or broken: these tests need busybox-static (`apt-get install busybox-static`)"
    );
}

#[test]
fn default_image_is_built_from_busybox_once() {
    require_busybox_static();
    let t = test_store();
    let info = t.store.ensure_default().unwrap();
    assert_eq!(info.name, DEFAULT_IMAGE);
    assert_eq!(info.layers, 1);
    let index = t.home.path().join("images/index.json");
    let index_meta = fs::metadata(&index).unwrap();

    let again = t.store.ensure_default().unwrap();
    assert_eq!(again, info, "the second call reuses the image");
    let after = fs::metadata(&index).unwrap();
    assert_eq!(
        (after.ino(), after.mtime_nsec()),
        (index_meta.ino(), index_meta.mtime_nsec()),
        "index.json untouched: no rebuild"
    );

    let resolved = t.store.resolve(DEFAULT_IMAGE).unwrap();
    assert_eq!(resolved.digest, info.digest);
    assert_eq!(resolved.layers.len(), 2, "busybox layer + guest layer");
    let root = &resolved.layers[0];
    let busybox = root.join("bin/busybox");
    assert_eq!(fs::read(&busybox).unwrap(), fs::read("/bin/busybox").unwrap());
    assert_eq!(lstat(&busybox).mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(root.join("usr/bin/env")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(lstat(&root.join("tmp")).mode() & 0o7777, 0o1777);
    assert_eq!(lstat(&root.join("var/tmp")).mode() & 0o7777, 0o1777);
    for dir in ["proc", "sys", "dev", "run", "root", "etc"] {
        assert!(lstat(&root.join(dir)).is_dir(), "/{dir}");
    }
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.starts_with("root:x:0:0:") && passwd.contains("\nnobody:"),
        "{passwd}"
    );
    assert!(fs::read_to_string(root.join("etc/group"))
        .unwrap()
        .contains("root:x:0:"));
    assert!(root.join("etc/hostname").is_file());
    let guest = resolved.layers[1].join("usr/bin/sandbox-guest");
    assert_eq!(fs::read(guest).unwrap(), GUEST_CONTENT);
    assert_eq!(resolved.config.cmd, ["sandbox-guest", "info"]);
    assert!(resolved
        .config
        .env
        .iter()
        .any(|e| e.starts_with("PATH=") && e.contains("/usr/bin")));

    // Every applet busybox lists has its link.
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .filter(|a| *a != "bin/busybox")
    {
        assert!(lstat(&root.join(applet)).file_type().is_symlink(), "{applet}");
    }
}

#[test]
fn default_image_digest_is_the_same_in_every_store() {
    require_busybox_static();
    let a = test_store();
    let b = test_store();
    let da = a.store.ensure_default().unwrap().digest;
    let db = b.store.resolve(DEFAULT_IMAGE).unwrap().digest;
    assert_eq!(da, db, "a deterministic image from the same busybox");
}

#[test]
fn flattened_default_image_runs_busybox() {
    require_busybox_static();
    let t = test_store();
    let dest = t.scratch.path().join("root");
    t.store
        .resolve(DEFAULT_IMAGE)
        .unwrap()
        .flatten_into(&dest)
        .unwrap();
    // The flattened tree is a working root: its busybox answers through its /bin/sh link.
    let out = std::process::Command::new("chroot")
        .arg(&dest)
        .args(["/bin/sh", "-c", "echo hello from $(basename $0)"])
        .output()
        .expect("chroot (coreutils) runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello from sh");
}
