//! An image's layers as a read-only view, and the checks `sandbox run` makes on them before
//! anything is created: that the guest program is there, and that the command exists in the
//! image (or on a volume).

use crate::error::CoreError;
use sandbox_protocol::DEFAULT_PATH;
use std::path::{Component, Path, PathBuf};

/// An image ready to be the lower layers of an overlay.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// The name the user gave (for messages).
    pub name: String,
    /// Unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// The image's environment, in order.
    pub env: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    pub working_dir: Option<String>,
    /// The image's default user, when numeric (`UID` or `UID:GID`).
    pub user: Option<(u32, u32)>,
}

impl Image {
    /// The PATH the command is searched in.
    pub fn path_var(&self) -> &str {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(DEFAULT_PATH)
    }

    /// Whether `path` (absolute, inside the image) exists in the layer stack, following
    /// symlinks inside the image (an absolute link target is resolved against the image, not
    /// the host). Whiteouts are not interpreted: a file deleted by an upper layer still counts.
    pub fn contains(&self, path: &str) -> bool {
        self.lookup(path).is_some()
    }

    /// Whether `path` is a directory in the image (`None`: it is not there).
    pub fn is_dir(&self, path: &str) -> Option<bool> {
        self.lookup(path)
    }

    /// Finds `path` as [`Image::contains`] does; answers whether it is a directory.
    fn lookup(&self, path: &str) -> Option<bool> {
        let mut is_dir = true;
        let mut pending: Vec<String> = normalize(path);
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while !pending.is_empty() {
            let name = pending.remove(0);
            let mut candidate = resolved.clone();
            candidate.push(name);
            let rel: PathBuf = candidate.iter().collect();
            let (layer, meta) = self
                .layers
                .iter()
                .rev()
                .find_map(|l| std::fs::symlink_metadata(l.join(&rel)).ok().map(|m| (l, m)))?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = std::fs::read_link(layer.join(&rel)).ok()?;
                let target = target.to_string_lossy().into_owned();
                let mut next = if target.starts_with('/') {
                    resolved.clear();
                    normalize(&target)
                } else {
                    let mut base = resolved.clone();
                    base.extend(target.split('/').filter(|c| !c.is_empty()).map(str::to_string));
                    resolved.clear();
                    normalize(&format!("/{}", base.join("/")))
                };
                next.append(&mut pending);
                pending = next;
            } else {
                is_dir = meta.is_dir();
                resolved = candidate;
            }
        }
        Some(is_dir)
    }
}

/// `path`'s components with `.` and `..` applied (never above the root).
fn normalize(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Checks the image can run `argv0` and has the guest program; `volumes` are (guest path,
/// host path) pairs that may supply the command instead.
pub fn check(image: &Image, argv0: Option<&str>, volumes: &[(String, PathBuf)]) -> Result<(), CoreError> {
    if image.layers.is_empty() {
        return Err(CoreError::EmptyImage {
            image: image.name.clone(),
        });
    }
    let guest = sandbox_protocol::GUEST_PATH_IN_IMAGE;
    if !image.contains(guest) {
        return Err(CoreError::NoGuestProgram {
            image: image.name.clone(),
            path: guest.to_string(),
        });
    }
    let Some(cmd) = argv0 else { return Ok(()) };
    let candidates: Vec<String> = if cmd.contains('/') {
        let abs = if cmd.starts_with('/') {
            cmd.to_string()
        } else {
            // Relative to the working directory; the launcher cannot judge that well, let init.
            return Ok(());
        };
        vec![abs]
    } else {
        image
            .path_var()
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{cmd}", d.trim_end_matches('/')))
            .collect()
    };
    let on_volume = |c: &str| {
        volumes.iter().any(|(guest, host)| {
            Path::new(c)
                .strip_prefix(guest)
                .map(|rest| host.join(rest).exists())
                .unwrap_or(false)
        })
    };
    if candidates
        .iter()
        .any(|c| image.is_dir(c) == Some(false) || on_volume(c))
    {
        return Ok(());
    }
    // Only directories by that name: execve would refuse each (EACCES).
    if let Some(dir) = candidates.iter().find(|c| image.is_dir(c) == Some(true)) {
        return Err(CoreError::CommandIsDirectory {
            command: cmd.to_string(),
            image: image.name.clone(),
            path: dir.clone(),
        });
    }
    Err(CoreError::CommandNotFound {
        command: cmd.to_string(),
        image: image.name.clone(),
        searched: if cmd.contains('/') {
            cmd.to_string()
        } else {
            format!("PATH={}", image.path_var())
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn layered() -> (tempfile::TempDir, Image) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let top = dir.path().join("top");
        std::fs::create_dir_all(base.join("usr/bin")).unwrap();
        std::fs::create_dir_all(top.join("bin")).unwrap();
        std::fs::write(base.join("usr/bin/sandbox-guest"), b"").unwrap();
        std::fs::write(base.join("usr/bin/busybox"), b"").unwrap();
        // An absolute link, as images have: must resolve inside the image, not on the host.
        symlink("/usr/bin/busybox", top.join("bin/sh")).unwrap();
        symlink("/etc/passwd", top.join("bin/hostfile")).unwrap();
        let image = Image {
            name: "test".into(),
            layers: vec![base, top],
            ..Image::default()
        };
        (dir, image)
    }

    #[test]
    fn finds_commands_through_links_inside_the_image() {
        let (_dir, image) = layered();
        assert!(image.contains("/bin/sh"));
        assert!(image.contains("/usr/bin/../bin/sandbox-guest"));
        assert!(
            !image.contains("/bin/hostfile"),
            "a link must not resolve on the host"
        );
        check(&image, Some("sh"), &[]).unwrap();
        check(&image, Some("/bin/sh"), &[]).unwrap();
        check(&image, None, &[]).unwrap();
    }

    #[test]
    fn a_directory_is_not_a_command() {
        let (_dir, image) = layered();
        let err = check(&image, Some("/usr/bin"), &[]).unwrap_err();
        assert!(matches!(err, CoreError::CommandIsDirectory { .. }), "{err}");
        assert_eq!(err.exit_status(), 126);
        assert!(err.to_string().contains("/usr/bin"), "{err}");
    }

    #[test]
    fn names_a_missing_command_and_the_image() {
        let (_dir, image) = layered();
        let err = check(&image, Some("python3"), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("python3") && msg.contains("\"test\""), "{msg}");
        assert_eq!(err.exit_status(), 127);
    }

    #[test]
    fn refuses_an_image_without_the_guest_program() {
        let dir = tempfile::tempdir().unwrap();
        let image = Image {
            name: "bare".into(),
            layers: vec![dir.path().to_path_buf()],
            ..Image::default()
        };
        assert!(matches!(
            check(&image, None, &[]),
            Err(CoreError::NoGuestProgram { .. })
        ));
    }
}
