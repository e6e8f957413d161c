//! The container's root filesystem: an overlay of the image's layers with a per-container upper
//! dir, entered with `pivot_root`, plus the `--volume` bind mounts.
//!
//! Everything here runs in the container's first process, in its own mount namespace, whose
//! propagation is made private before anything is mounted: no mount made here is ever seen in
//! the host's mount table, and all of them vanish with the namespace.
//!
//! Why `pivot_root` and not `chroot`: chroot only changes how paths are resolved for this
//! process; the old root stays mounted and reachable (a chrooted root escapes with a second
//! chroot and `..`). `pivot_root(new, put_old)` makes `new` the root mount of the namespace and
//! moves the old root to `put_old`, which can then be detached, so the host's filesystem is not
//! merely hidden but gone from the namespace.

use crate::sys::{bind, ctx, detach, mkdir_all, mount_fs, propagation, remount_read_only, Step};
use nix::mount::MsFlags;
use sandbox_protocol::trace;
use std::path::{Path, PathBuf};

/// Where the old root sits between `pivot_root` and its detachment.
pub const OLD_ROOT: &str = "/.sandbox-oldroot";

/// A bind mount from the host, resolved before the container starts.
#[derive(Debug, Clone)]
pub struct BindVolume {
    /// Absolute, canonical host path.
    pub host: PathBuf,
    /// Absolute path inside the container.
    pub guest: String,
    pub read_only: bool,
}

/// The overlay mount options for `layers` (bottom first, as the image store lists them;
/// overlayfs wants the topmost lower dir first).
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, String> {
    let mut all: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    all.push(upper);
    all.push(work);
    if let Some(bad) = all.iter().find(|p| {
        let s = p.to_string_lossy();
        s.contains(':') || s.contains(',') || s.contains('\\')
    }) {
        return Err(format!(
            "the path {} contains `:`, `,` or `\\`, which overlayfs options cannot carry: \
             move $SANDBOX_HOME to a plainer path",
            bad.display()
        ));
    }
    let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    // The kernel copies mount options into one page.
    if options.len() >= 4000 {
        return Err(format!(
            "the image has too many layers ({}) for one overlay mount: flatten it",
            layers.len()
        ));
    }
    Ok(options)
}

/// Makes every mount in this (new) mount namespace private, so nothing mounted from now on
/// propagates to the host's namespace, and nothing the host mounts appears here.
pub fn make_private() -> Step {
    propagation("/", MsFlags::MS_REC | MsFlags::MS_PRIVATE)
}

/// Mounts the overlay on `target`.
pub fn mount_overlay(options: &str, target: &Path) -> Step {
    let target = target.to_string_lossy();
    mount_fs("overlay", "overlay", &target, MsFlags::empty(), Some(options))
}

/// Makes `new_root` (a mount point) the root of this mount namespace and changes into it; the
/// old root stays reachable at [`OLD_ROOT`] until [`detach_old_root`].
pub fn pivot(new_root: &Path) -> Step {
    let put_old = new_root.join(OLD_ROOT.trim_start_matches('/'));
    ctx(
        nix::unistd::mkdir(&put_old, nix::sys::stat::Mode::from_bits_truncate(0o700)),
        || format!("creating {}", put_old.display()),
    )?;
    let began = trace::start();
    ctx(nix::unistd::pivot_root(new_root, &put_old), || {
        format!("pivot_root into {}", new_root.display())
    })?;
    trace::step("pivot_root", began, || {
        format!("new root {}, old root at {OLD_ROOT}", new_root.display())
    });
    ctx(nix::unistd::chdir("/"), || {
        "changing into the new root".to_string()
    })
}

/// Bind-mounts each volume from the host (reached through the old root) onto its path in the
/// container. Resolving the target inside the new root means a symlink in the image cannot
/// redirect the mount onto a host path.
pub fn bind_volumes(volumes: &[BindVolume], rootless: bool) -> Step {
    for volume in volumes {
        let source = Path::new(OLD_ROOT).join(volume.host.strip_prefix("/").unwrap_or(&volume.host));
        mkdir_all(&volume.guest)?;
        bind(&source, &volume.guest, true)?;
        if volume.read_only {
            // In a user namespace the host's nosuid/nodev on the source are locked: keep them.
            let keep = if rootless {
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV
            } else {
                MsFlags::empty()
            };
            remount_read_only(&volume.guest, keep)?;
        }
    }
    Ok(())
}

/// Detaches the old root and removes its mount point: from here on the host's filesystem is not
/// reachable from the container.
pub fn detach_old_root() -> Step {
    propagation(OLD_ROOT, MsFlags::MS_REC | MsFlags::MS_PRIVATE)?;
    detach(OLD_ROOT)?;
    ctx(
        nix::unistd::unlinkat(
            nix::fcntl::AT_FDCWD,
            OLD_ROOT,
            nix::unistd::UnlinkatFlags::RemoveDir,
        ),
        || format!("removing {OLD_ROOT}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lists_the_top_layer_first() {
        let layers = vec![PathBuf::from("/l/base"), PathBuf::from("/l/top")];
        let opts = overlay_options(&layers, Path::new("/r/upper"), Path::new("/r/work")).unwrap();
        assert_eq!(opts, "lowerdir=/l/top:/l/base,upperdir=/r/upper,workdir=/r/work");
    }

    #[test]
    fn overlay_refuses_paths_it_cannot_carry() {
        let layers = vec![PathBuf::from("/l/a:b")];
        let err = overlay_options(&layers, Path::new("/u"), Path::new("/w")).unwrap_err();
        assert!(err.contains("/l/a:b"), "{err}");
    }
}
