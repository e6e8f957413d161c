//! `sandbox disk`: build and copy ext4 disks by hand (root disks are normally made by
//! `sandbox run --mode vm`); useful to inspect what a VM boots from.

use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Build (or find) the cached read-only root disk of an unpacked root file system.
    ///
    /// The disk is `$SANDBOX_CACHE/disks/KEY.ext4`, made with `mkfs.ext4 -d ROOTFS`, labelled
    /// sandbox-root, sized 1.25 × the tree + 32 MiB. An existing disk for KEY is reused as is.
    Build {
        /// The root of the file tree to put on the disk.
        rootfs: PathBuf,
        /// The cache key naming the content (e.g. the image digest and the guest binary hash).
        #[arg(long)]
        key: String,
    },
    /// Make a writable copy of a disk (a reflink where the file system allows, else sparse).
    Copy {
        /// The base disk.
        base: PathBuf,
        /// Where the copy goes; must not exist.
        dest: PathBuf,
    },
    /// Build an ext4 image of a host directory (what `--volume DIR:PATH` uses in VM mode).
    Volume {
        /// The directory to copy onto the image.
        dir: PathBuf,
        /// The image file to write (replaced if present).
        dest: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Build { rootfs, key } => {
            let path = sandbox_disk::build_base(&rootfs, &key)
                .with_context(|| format!("building the root disk of {}", rootfs.display()))?;
            println!("{}", path.display());
        }
        Command::Copy { base, dest } => {
            let kind = sandbox_disk::writable_copy(&base, &dest)
                .with_context(|| format!("copying {}", base.display()))?;
            println!("{} ({kind:?})", dest.display());
        }
        Command::Volume { dir, dest } => {
            sandbox_disk::build_volume_from_dir(&dir, &dest)
                .with_context(|| format!("building a volume image of {}", dir.display()))?;
            println!("{}", dest.display());
        }
    }
    Ok(0)
}
