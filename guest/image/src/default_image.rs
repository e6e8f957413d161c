//! The default image, built on first use from Debian's busybox-static: `/bin/busybox`, a
//! symlink for every applet at the path `busybox --list-full` gives, a minimal `/etc`, and the
//! usual empty directories. The layer is a deterministic tar, so the image digest is the same on
//! every machine with the same busybox.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use crate::devices::DevicePolicy;
use crate::error::ImageError;
use crate::import::rootfs::rootfs_config;
use crate::import::staging::{StagedImage, StagedLayer, Staging};
use crate::layout::Layout;
use crate::tarwrite::{SynthKind, SynthTree};
use crate::DEFAULT_IMAGE;

/// Where busybox-static installs busybox.
pub(crate) const BUSYBOX: &str = "/bin/busybox";

const INSTALL: &str = "busybox-static is not installed: run `apt-get install busybox-static`";

/// Stages the default image from the host's busybox-static.
pub(crate) fn stage(layout: &Layout) -> Result<StagedImage, ImageError> {
    stage_from(layout, Path::new(BUSYBOX))
}

/// Stages the default image from the static busybox at `busybox`.
fn stage_from(layout: &Layout, busybox: &Path) -> Result<StagedImage, ImageError> {
    if !busybox.is_file() {
        return Err(ImageError::DefaultImage(format!(
            "{} is missing; {INSTALL}",
            busybox.display()
        )));
    }
    if !is_static_elf(busybox)? {
        return Err(ImageError::DefaultImage(format!(
            "{} is dynamically linked (the `busybox` package?), it cannot run in an empty image; {INSTALL}",
            busybox.display()
        )));
    }
    let out = Command::new(busybox).arg("--list-full").output().map_err(|e| {
        ImageError::DefaultImage(format!(
            "cannot run `{} --list-full`: {e}; {INSTALL}",
            busybox.display()
        ))
    })?;
    if !out.status.success() {
        return Err(ImageError::DefaultImage(format!(
            "`{} --list-full` failed ({}): it is not a working busybox; {INSTALL}",
            busybox.display(),
            out.status
        )));
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let applets: Vec<&str> = listing.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if !applets.contains(&"bin/sh") {
        return Err(ImageError::DefaultImage(format!(
            "`{} --list-full` does not list bin/sh: it is not the expected busybox; {INSTALL}",
            busybox.display()
        )));
    }
    eprintln!(
        "building the default image from {} ({} applets)...",
        busybox.display(),
        applets.len()
    );

    let mut tree = SynthTree::default();
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "var",
    ] {
        tree.add(dir, 0o755, SynthKind::Dir);
    }
    tree.add("root", 0o700, SynthKind::Dir);
    tree.add("tmp", 0o1777, SynthKind::Dir);
    tree.add("var/tmp", 0o1777, SynthKind::Dir);
    tree.add("bin/busybox", 0o755, SynthKind::FileFrom(busybox.to_path_buf()));
    for applet in &applets {
        let path = applet.trim_start_matches('/');
        if path == "bin/busybox" || path.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            continue;
        }
        tree.add(path, 0o777, SynthKind::Symlink(BUSYBOX.to_string()));
    }
    tree.add(
        "etc/passwd",
        0o644,
        SynthKind::Bytes(
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
        ),
    );
    tree.add(
        "etc/group",
        0o644,
        SynthKind::Bytes(b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
    );
    tree.add("etc/hostname", 0o644, SynthKind::Bytes(b"sandbox\n".to_vec()));

    let staging = Staging::new(layout, DevicePolicy::Refuse)?;
    let blob = staging.put_with(oci_spec::image::MediaType::ImageLayer, |w| {
        tree.write(w)
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()))
    })?;
    let layer = StagedLayer {
        diff_hex: blob.hex.clone(),
        blob,
        markers: Vec::new(),
        special: None,
    };
    let cmd = vec!["sandbox-guest".to_string(), "info".to_string()];
    let config = rootfs_config(&[&layer], Some(cmd), None)?;
    staging.finish_with_config(&config, &[layer], DEFAULT_IMAGE.to_string())
}

/// Whether `path` is an ELF executable without a program interpreter (statically linked).
fn is_static_elf(path: &Path) -> Result<bool, ImageError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(1 << 16).read_to_end(&mut bytes))
        .map_err(ImageError::io_at("cannot read", path))?;
    let not_elf = || {
        ImageError::DefaultImage(format!(
            "{} is not a 64-bit ELF executable; {INSTALL}",
            path.display()
        ))
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(not_elf());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().map_err(|_| not_elf())?) as usize;
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if at + 4 > bytes.len() {
            return Err(not_elf());
        }
        let p_type = u32::from_le_bytes(bytes[at..at + 4].try_into().map_err(|_| not_elf())?);
        if p_type == 3 {
            // PT_INTERP: needs a dynamic loader.
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (tempfile::TempDir, Layout) {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::open(home.path()).unwrap();
        (home, layout)
    }

    #[test]
    fn missing_busybox_names_the_package() {
        let (_home, layout) = layout();
        let err = stage_from(&layout, Path::new("/nonexistent/busybox"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("apt-get install busybox-static"), "{err}");
    }

    #[test]
    fn dynamic_or_non_elf_busybox_is_refused() {
        let (home, layout) = layout();
        // /bin/ls on Debian is dynamically linked (coreutils).
        assert!(
            !is_static_elf(Path::new("/bin/ls")).unwrap(),
            "/bin/ls should be dynamic"
        );
        let err = stage_from(&layout, Path::new("/bin/ls"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("dynamically linked") && err.contains("busybox-static"),
            "{err}"
        );
        let script = home.path().join("busybox");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let err = stage_from(&layout, &script).err().unwrap().to_string();
        assert!(
            err.contains("not a 64-bit ELF") && err.contains("busybox-static"),
            "{err}"
        );
        assert!(
            is_static_elf(Path::new(BUSYBOX)).unwrap(),
            "busybox-static is installed here"
        );
    }
}
