//! Real ext4 images made with mkfs.ext4 -d, inspected with debugfs (both from e2fsprogs), and
//! per-VM writable copies that leave the base untouched and stay sparse (or share blocks).

use sandbox_disk::{build_base_in, build_volume_from_dir, writable_copy, VmDisk};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("cannot run debugfs ({e}): run `apt-get install e2fsprogs`"));
    assert!(
        out.status.success(),
        "debugfs -R {request:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small tree: files, a symlink, a subdir, a 0600 file owned by 1000:1000.
fn sample_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/sub")).unwrap();
    std::fs::write(root.join("etc/hostname"), "sandbox\n").unwrap();
    std::fs::write(root.join("etc/sub/deep.txt"), "deep file\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("hostname-link")).unwrap();
    let secret = root.join("secret");
    std::fs::write(&secret, "only for 1000\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&secret, Some(1000), Some(1000)).unwrap();
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn the_base_disk_holds_the_tree_with_contents_modes_and_owners() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("rootfs");
    sample_tree(&tree);
    let cache = work.path().join("disks");
    let image = build_base_in(&cache, &tree, "test-key").unwrap();
    assert_eq!(image, cache.join("test-key.ext4"));
    assert_eq!(
        std::fs::metadata(&image).unwrap().permissions().mode() & 0o777,
        0o444
    );

    assert_eq!(debugfs(&image, "cat /etc/hostname"), "sandbox\n");
    assert_eq!(debugfs(&image, "cat /etc/sub/deep.txt"), "deep file\n");
    let secret = debugfs(&image, "stat /secret");
    assert!(
        secret.contains("User:  1000") && secret.contains("Group:  1000"),
        "{secret}"
    );
    assert!(secret.contains("Mode:  0600"), "{secret}");
    let link = debugfs(&image, "stat /hostname-link");
    assert!(
        link.contains("Type: symlink") && link.contains("/etc/hostname"),
        "{link}"
    );
    assert!(debugfs(&image, "stat /etc/sub").contains("Type: directory"));
    let label = debugfs(&image, "stats");
    assert!(
        label.contains("Filesystem volume name:   sandbox-root"),
        "{label}"
    );
    // Nothing but the finished image is left in the cache directory.
    let names: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["test-key.ext4"]);
}

#[test]
fn a_second_build_with_the_same_key_reuses_the_file() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("rootfs");
    sample_tree(&tree);
    let cache = work.path().join("disks");
    let first = build_base_in(&cache, &tree, "same").unwrap();
    let inode = std::fs::metadata(&first).unwrap().ino();
    std::fs::write(tree.join("added-later"), "x").unwrap();
    let second = build_base_in(&cache, &tree, "same").unwrap();
    assert_eq!(first, second);
    assert_eq!(
        std::fs::metadata(&second).unwrap().ino(),
        inode,
        "the image was rebuilt"
    );
}

#[test]
fn a_writable_copy_leaves_the_base_unchanged_and_is_cheap() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("rootfs");
    sample_tree(&tree);
    let base = build_base_in(&work.path().join("disks"), &tree, "base").unwrap();
    let before = sha256(&base);

    let dest = work.path().join("vm.ext4");
    let kind = writable_copy(&base, &dest).unwrap();
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!(meta.len(), std::fs::metadata(&base).unwrap().len());
    assert_eq!(sha256(&dest), before, "the copy differs from the base");
    let allocated = meta.blocks() * 512;
    eprintln!(
        "copy kind {kind:?}: {} KiB allocated of {} KiB",
        allocated / 1024,
        meta.len() / 1024
    );
    // Sparse and reflinked copies of a mostly empty disk both keep its holes.
    assert!(
        allocated < meta.len() / 4,
        "{kind:?} copy allocates {allocated} of {} bytes",
        meta.len()
    );
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o644,
        "the copy must be writable"
    );

    // Writing to the copy (as a VM would) leaves the base as it was.
    let file = std::fs::OpenOptions::new().write(true).open(&dest).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xab; 8192], 1 << 20).unwrap();
    drop(file);
    assert_ne!(sha256(&dest), before);
    assert_eq!(sha256(&base), before, "writing the copy changed the base");
}

#[test]
fn a_vm_disk_is_removed_on_drop_unless_kept() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("rootfs");
    sample_tree(&tree);
    let base = build_base_in(&work.path().join("disks"), &tree, "base").unwrap();
    let dropped = work.path().join("dropped.ext4");
    {
        let disk = VmDisk::create(&base, &dropped).unwrap();
        assert!(disk.path().is_file());
    }
    assert!(!dropped.exists());
    let kept = work.path().join("kept.ext4");
    let path = VmDisk::create(&base, &kept).unwrap().keep();
    assert!(path.is_file());
    // An existing destination is refused rather than overwritten.
    assert!(writable_copy(&base, &kept)
        .unwrap_err()
        .to_string()
        .contains("kept.ext4"));
}

#[test]
fn a_volume_image_holds_the_host_directory() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(dir.join("nested/file.bin"), vec![7u8; 100_000]).unwrap();
    let dest = work.path().join("vol.ext4");
    build_volume_from_dir(&dir, &dest).unwrap();
    let stat = debugfs(&dest, "stat /nested/file.bin");
    assert!(stat.contains("Size: 100000"), "{stat}");
    assert!(debugfs(&dest, "stats").contains("Filesystem volume name:   sandbox-vol"));
}

#[test]
fn missing_trees_and_bad_keys_are_named() {
    let work = tempfile::tempdir().unwrap();
    let err = build_base_in(work.path(), &work.path().join("nope"), "k").unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = build_base_in(work.path(), work.path(), "../escape").unwrap_err();
    assert!(err.to_string().contains("../escape"), "{err}");
}
