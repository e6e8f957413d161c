//! Making an ext4 image of a directory tree with `mkfs.ext4 -d` (no loop mount, no root needed
//! beyond reading the files), sized from the tree: 1.25 × its size + 32 MiB, with enough inodes.

use crate::DiskError;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
/// One inode per this many bytes, as mke2fs's default "ext4" usage type.
const BYTES_PER_INODE: u64 = 16384;

/// What a tree needs on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSize {
    /// Bytes of file data and directory blocks, each file rounded up to whole 4 KiB blocks.
    pub bytes: u64,
    /// Files, directories, links and other entries (hard links counted once).
    pub entries: u64,
}

/// Walks `root` (without following symlinks) and measures it.
pub fn measure(root: &Path) -> Result<TreeSize, DiskError> {
    let mut size = TreeSize { bytes: 0, entries: 0 };
    let mut seen_links = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| DiskError::io("cannot list", &dir, e))?;
        size.entries += 1;
        size.bytes += BLOCK;
        for entry in entries {
            let entry = entry.map_err(|e| DiskError::io("cannot list", &dir, e))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| DiskError::io("cannot stat", &path, e))?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if meta.nlink() > 1 && !seen_links.insert((meta.dev(), meta.ino())) {
                continue;
            }
            size.entries += 1;
            size.bytes += meta.len().div_ceil(BLOCK) * BLOCK;
        }
    }
    Ok(size)
}

/// The image size for a tree: 1.25 × its size + 32 MiB, rounded up to a whole MiB.
pub fn image_bytes(tree: TreeSize) -> u64 {
    let raw = tree.bytes + tree.bytes / 4 + 32 * MIB;
    raw.div_ceil(MIB) * MIB
}

/// The inode count for a tree on an image of `image_bytes`: the default density, or twice the
/// tree's entries plus room for a thousand new files, whichever is more.
pub fn inode_count(tree: TreeSize, image_bytes: u64) -> u64 {
    (image_bytes / BYTES_PER_INODE).max(tree.entries * 2 + 1024)
}

/// Finds mkfs.ext4 on `$PATH` or in the sbin directories (not always on a user's `$PATH`).
pub fn find_mkfs() -> Result<PathBuf, DiskError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("mkfs.ext4"))
        .find(|p| p.is_file())
        .ok_or(DiskError::MkfsMissing)
}

/// Writes an ext4 filesystem labelled `label` holding a copy of `tree` into `image` (created or
/// truncated), sized from the tree.
pub fn make_ext4(tree: &Path, image: &Path, label: &str) -> Result<(), DiskError> {
    if !tree.is_dir() {
        return Err(DiskError::NotADirectory(tree.to_path_buf()));
    }
    let mkfs = find_mkfs()?;
    let measured = measure(tree)?;
    let bytes = image_bytes(measured);
    let inodes = inode_count(measured, bytes);
    let file = fs::File::create(image).map_err(|e| DiskError::io("cannot create", image, e))?;
    file.set_len(bytes)
        .map_err(|e| DiskError::io("cannot size", image, e))?;
    drop(file);
    let started = Instant::now();
    let loud = bytes > 256 * MIB;
    if loud {
        eprintln!(
            "disk: building a {} MiB ext4 image of {} ...",
            bytes / MIB,
            tree.display()
        );
    }
    let output = Command::new(&mkfs)
        .args(["-q", "-F", "-t", "ext4", "-L", label, "-N", &inodes.to_string()])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg("-d")
        .arg(tree)
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DiskError::io("cannot run", &mkfs, e))?;
    if !output.status.success() {
        return Err(DiskError::Mkfs {
            image: image.to_path_buf(),
            source_dir: tree.to_path_buf(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    if loud {
        eprintln!(
            "disk: built {} in {:.1}s",
            image.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_tree_gets_32_mib_and_the_default_inode_density() {
        let tree = TreeSize {
            bytes: 4096,
            entries: 1,
        };
        let bytes = image_bytes(tree);
        assert_eq!(bytes, 33 * MIB);
        assert_eq!(inode_count(tree, bytes), 33 * MIB / BYTES_PER_INODE);
    }

    #[test]
    fn a_tree_of_many_small_files_gets_inodes_for_each() {
        let tree = TreeSize {
            bytes: 100_000 * BLOCK,
            entries: 100_000,
        };
        let bytes = image_bytes(tree);
        assert!(bytes >= 100_000 * BLOCK * 5 / 4 + 32 * MIB && bytes % MIB == 0);
        assert_eq!(inode_count(tree, bytes), 201_024);
    }
}
