//! The container's root filesystem: an overlay of an image's layers with a per-container upper
//! dir (`sandbox run`), or an OCI bundle's root directory bind-mounted onto itself; entered with
//! `pivot_root`, after which the old root is detached.
//!
//! Everything here runs in the container's first process, in its own mount namespace, whose
//! propagation is made private before anything is mounted: no mount made here is ever seen in
//! the host's mount table, and all of them vanish with the namespace.
//!
//! Why `pivot_root` and not `chroot`: chroot only changes how paths are resolved for this
//! process; the old root stays mounted and reachable (a chrooted root escapes with a second
//! chroot and `..`). `pivot_root(new, put_old)` makes `new` the root mount of the namespace and
//! moves the old root to `put_old`, which is detached at once, so the host's filesystem is not
//! merely hidden but gone from the namespace.

use crate::sys::{bind, ctx, detach, mount_fs, propagation, shown, Step};
use nix::mount::MsFlags;
use sandbox_protocol::trace;
use std::path::{Path, PathBuf};

/// What the root filesystem is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// An overlay: these `lowerdir=...,upperdir=...,workdir=...` options.
    Overlay(String),
    /// An overlay of these directories mounted by the root of the container's user namespace,
    /// an unprivileged host id that cannot reach them by path (`sandbox run --userns`): the
    /// first process opens them before it becomes that root ([`crate::userns_overlay`]). The
    /// layers' owners must be the namespace's ids, opaque directories marked
    /// `user.overlay.opaque`.
    UserNamespaceOverlay(OverlayDirs),
    /// An existing directory (an OCI bundle's `root.path`), bind-mounted onto itself.
    Directory(PathBuf),
}

/// The directories of an overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDirs {
    /// The lower layers, bottom first (as the image store lists them).
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
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
    propagation(Path::new("/"), MsFlags::MS_REC | MsFlags::MS_PRIVATE)
}

/// Mounts the root on `target`: the overlay, or the directory bound onto itself (so it is a
/// mount point `pivot_root` accepts). Device nodes on it cannot be opened (`nodev`), and an
/// image's setuid files give no privilege (`nosuid`). A [`RootSource::UserNamespaceOverlay`] is
/// mounted from descriptors instead: see [`crate::userns_overlay::mount`].
pub fn mount_root(source: &RootSource, target: &Path) -> Step {
    match source {
        RootSource::Overlay(options) => {
            mount_fs("overlay", "overlay", target, MsFlags::MS_NODEV, Some(options))
        }
        RootSource::Directory(dir) => bind(dir, target, true),
        RootSource::UserNamespaceOverlay(_) => Err(crate::sys::StepError {
            what: "mounting a user namespace's overlay by path (a bug: it is mounted from descriptors)"
                .into(),
            errno: nix::errno::Errno::EINVAL,
        }),
    }
}

/// Makes `new_root` (a mount point) the root of this mount namespace. `pivot_root(".", ".")`
/// stacks the old root on top of the new one at `/`, so no directory for it is needed in the
/// new root (which may be read-only); [`detach_old_root`] then takes it off.
pub fn pivot(new_root: &Path) -> Step {
    ctx(nix::unistd::chdir(new_root), || {
        format!("changing into {}", shown(new_root).display())
    })?;
    let began = trace::start();
    ctx(nix::unistd::pivot_root(".", "."), || {
        format!("pivot_root into {}", shown(new_root).display())
    })?;
    trace::step("pivot_root", began, || {
        format!(
            "new root {}, old root stacked on it until detached",
            shown(new_root).display()
        )
    });
    Ok(())
}

/// Detaches the old root: from here on the host's filesystem is not reachable from the
/// container. Its mounts are made private first, so the detach cannot propagate to the host.
pub fn detach_old_root() -> Step {
    let here = Path::new(".");
    propagation(here, MsFlags::MS_REC | MsFlags::MS_PRIVATE)?;
    detach(here)?;
    ctx(nix::unistd::chdir("/"), || {
        "changing into the new root".to_string()
    })
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
