//! What goes into the L1 initramfs: init, busybox, the kernel modules, the static `sandbox` and
//! `sandbox-guest` binaries, the host tools sandbox calls (with their libraries), and any extra
//! files the caller names (guest kernels, disks) at their L1 paths.

use crate::init_script::{init_script, L1_SANDBOX_CACHE, L1_SANDBOX_HOME};
use crate::initramfs::{shared_libraries, Tree};
use crate::l1kernel::L1Kernel;
use crate::modules;
use crate::tools::find_on_path;
use crate::LabError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Modules L1 loads, in this order after their dependencies: the run script arrives through
/// fw_cfg; KVM itself; overlayfs for container roots; veth and tun for `--net host`.
pub const L1_MODULES: &[&str] = &["qemu_fw_cfg", "kvm_amd", "overlay", "veth", "tun"];

/// Modules loaded only when the run exports a directory: the export disk is virtio-blk on PCI.
pub const L1_EXPORT_MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

/// Host tools the `sandbox` binary runs (root disks are made with `mkfs.ext4 -d`; links are set
/// up with `ip`), copied with their libraries when the host has them. `(tool, path in L1)`.
pub const L1_TOOLS: &[(&str, &str)] = &[("mkfs.ext4", "/usr/sbin/mkfs.ext4"), ("ip", "/usr/sbin/ip")];

/// Config files those tools read, copied when present.
const L1_TOOL_CONFIG: &[&str] = &["/etc/mke2fs.conf"];

/// A host file placed in L1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub host: PathBuf,
    /// Absolute path inside L1.
    pub l1_path: String,
}

impl Include {
    /// A file of the host's sandbox cache, at the same relative place in L1's cache.
    pub fn from_cache(host_cache: &Path, host: &Path) -> Option<Include> {
        let rel = host.strip_prefix(host_cache).ok()?;
        Some(Include {
            host: host.to_path_buf(),
            l1_path: format!("{L1_SANDBOX_CACHE}/{}", rel.display()),
        })
    }
}

/// Every file of the host's image store (`$SANDBOX_HOME/images`, an OCI layout), at the same
/// place under L1's `$SANDBOX_HOME`, so that `run --image NAME` finds imported images; their
/// layers are unpacked in L1 on first use.
pub fn image_store() -> Result<Vec<Include>, LabError> {
    let images = sandbox_protocol::paths::sandbox_home().join("images");
    let mut out = Vec::new();
    if images.is_dir() {
        walk(
            &images,
            &images,
            &format!("{L1_SANDBOX_HOME}/images"),
            false,
            &mut out,
        )?;
    }
    Ok(out)
}

/// Every file under `dir` as an [`Include`] under `l1_root` (dot files only with `dot_files`).
fn walk(
    root: &Path,
    dir: &Path,
    l1_root: &str,
    dot_files: bool,
    out: &mut Vec<Include>,
) -> Result<(), LabError> {
    for entry in std::fs::read_dir(dir).map_err(|e| LabError::io("list", dir, e))? {
        let path = entry.map_err(|e| LabError::io("list", dir, e))?.path();
        let dot = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if dot && !dot_files {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, l1_root, dot_files, out)?;
        } else if path.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(Include {
                host: path.clone(),
                l1_path: format!("{}/{}", l1_root.trim_end_matches('/'), rel.display()),
            });
        }
    }
    Ok(())
}

/// The host's static busybox (package busybox-static).
fn busybox() -> Result<PathBuf, LabError> {
    let missing = || {
        LabError::BinaryNotFound(
            "busybox-static is not installed: run `apt-get install busybox-static`".into(),
        )
    };
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(missing)?;
    if !shared_libraries(&path, "")?.is_empty() {
        return Err(missing());
    }
    Ok(path)
}

/// What a run adds to the standard contents.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Host files or directories (recursively), at their L1 paths.
    pub include: Vec<Include>,
    /// Generated files: (L1 path, content).
    pub generated: Vec<(String, Vec<u8>)>,
    /// Host programs, at the same paths in L1, with their shared libraries.
    pub tools: Vec<PathBuf>,
}

/// Everything L1 needs, as an initramfs tree.
pub fn tree(kernel: &L1Kernel, sandbox: &Path, guest: &Path, extras: &Extras) -> Result<Tree, LabError> {
    let mut t = Tree::new();
    for (path, content) in &extras.generated {
        t.bytes(path, 0o644, content.clone());
    }
    t.bytes("/init", 0o755, init_script());
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/run",
        "/root",
        "/etc",
        "/usr/bin",
        "/usr/sbin",
        "/sbin",
    ] {
        t.dir(d);
    }
    t.bytes(
        "/etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    );
    t.bytes("/etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n");
    t.bytes("/etc/hosts", 0o644, "127.0.0.1 localhost lab\n");
    let busybox = busybox()?;
    t.host_file("/bin/busybox", 0o755, &busybox);
    // The applet links are made here rather than by `busybox --install` in L1, where every
    // step is emulated; /init falls back to --install when /bin/sh is missing.
    if let Ok(out) = std::process::Command::new(&busybox).arg("--list").output() {
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            let applet = applet.trim();
            if !applet.is_empty() && !applet.contains('/') && applet != "busybox" {
                t.symlink(&format!("/bin/{applet}"), "busybox");
            }
        }
    }

    let base = modules::resolve(&kernel.modules, L1_MODULES)?;
    let export: Vec<_> = modules::resolve(&kernel.modules, L1_EXPORT_MODULES)?
        .into_iter()
        .filter(|m| !base.contains(m))
        .collect();
    for (list, mods) in [
        ("/lab/modules.order", &base),
        ("/lab/modules-export.order", &export),
    ] {
        let mut order = String::new();
        for m in mods {
            t.host_file(&format!("/lab/modules/{}.ko", m.name), 0o644, &m.path);
            order.push_str(&m.name);
            order.push('\n');
        }
        t.bytes(list, 0o644, order);
    }
    t.bytes("/lab/release", 0o644, format!("{}\n", kernel.release));

    for (at, host) in [("/bin/sandbox", sandbox), ("/bin/sandbox-guest", guest)] {
        if !shared_libraries(host, "")?.is_empty() {
            return Err(LabError::BinaryNotFound(format!(
                "{} is dynamically linked: L1 has no C library; build it with the workspace's \
                 .cargo/config.toml (static, --target x86_64-unknown-linux-gnu)",
                host.display()
            )));
        }
        t.host_program_stripped(at, host);
    }
    for (tool, at) in L1_TOOLS {
        if let Some(host) = find_on_path(tool) {
            t.program(at, &host, "reinstall its package")?;
        }
    }
    for conf in L1_TOOL_CONFIG {
        if Path::new(conf).is_file() {
            t.host_file(conf, 0o644, Path::new(conf));
        }
    }
    for tool in &extras.tools {
        t.program(&tool.display().to_string(), tool, "reinstall its package")?;
    }
    let mut files = Vec::new();
    for inc in &extras.include {
        if inc.host.is_dir() {
            walk(&inc.host, &inc.host, &inc.l1_path, true, &mut files)?;
        } else if inc.host.is_file() {
            files.push(inc.clone());
        } else {
            return Err(LabError::BinaryNotFound(format!(
                "--include {}: no such file or directory (it was to be placed at {} in L1)",
                inc.host.display(),
                inc.l1_path
            )));
        }
    }
    for inc in files {
        let mode = inc
            .host
            .metadata()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        t.host_file(&inc.l1_path, mode, &inc.host);
    }
    Ok(t)
}
