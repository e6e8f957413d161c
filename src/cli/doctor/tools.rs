//! The host programs and artifacts sandbox uses: e2fsprogs, QEMU (for the lab), a static
//! busybox (the default image), the linux-source-6.1 tarball and the cached guest kernel.

use super::report::{Check, Needed};
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Finds `program` on `$PATH` or in the sbin directories (often not on a user's `$PATH`).
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn program_check(name: &'static str, program: &str, package: &str, needed: Needed, why: &str) -> Check {
    match find(program) {
        Some(path) => {
            Check::ok(name, needed, format!("{} ({why})", path.display())).with_data(json!({ "path": path }))
        }
        None => Check::fail(
            name,
            needed,
            format!("{program} is not installed ({why})"),
            format!("run `apt-get install {package}`"),
        ),
    }
}

pub fn checks() -> Vec<Check> {
    vec![
        program_check(
            "mkfs.ext4",
            "mkfs.ext4",
            "e2fsprogs",
            Needed::Vm,
            "builds root disks",
        ),
        program_check(
            "debugfs",
            "debugfs",
            "e2fsprogs",
            Needed::Tests,
            "inspects disks in tests",
        ),
        program_check(
            "qemu",
            "qemu-system-x86_64",
            "qemu-system-x86",
            Needed::Lab,
            "runs the nested-KVM lab",
        ),
        busybox_check(),
        source_check(),
        kernel_check(),
    ]
}

fn busybox_check() -> Check {
    let Some(path) = find("busybox") else {
        return Check::fail(
            "busybox",
            Needed::Both,
            "busybox is not installed (the default image is built from it)",
            "run `apt-get install busybox-static`",
        );
    };
    match is_static_elf(&path) {
        Some(true) => Check::ok("busybox", Needed::Both, format!("{} is static", path.display()))
            .with_data(json!({ "path": path, "static": true })),
        _ => Check::fail(
            "busybox",
            Needed::Both,
            format!(
                "{} is dynamically linked: it cannot run alone in an image",
                path.display()
            ),
            "run `apt-get install busybox-static` (it replaces the dynamic busybox)",
        )
        .with_data(json!({ "path": path, "static": false })),
    }
}

/// Whether `path` is a 64-bit ELF without a program interpreter (PT_INTERP); `None` if not ELF64.
pub fn is_static_elf(path: &Path) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    if head.get(..4)? != b"\x7fELF" || *head.get(4)? != 2 {
        return None;
    }
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let phoff = usize::try_from(u64::from_le_bytes(head.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

fn source_check() -> Check {
    let path = Path::new(sandbox_kernel::DEFAULT_SOURCE);
    if path.is_file() {
        Check::ok(
            "linux-source",
            Needed::Vm,
            format!("{} (the guest kernel source)", path.display()),
        )
        .with_data(json!({ "path": path }))
    } else {
        Check::fail(
            "linux-source",
            Needed::Vm,
            format!(
                "{} is missing (the guest kernel is built from it)",
                path.display()
            ),
            "run `apt-get install linux-source-6.1 flex bison bc libelf-dev`",
        )
    }
}

fn kernel_check() -> Check {
    match sandbox_kernel::cached() {
        Some(k) => Check::ok(
            "guest-kernel",
            Needed::Vm,
            format!("built: {}", k.bzimage.display()),
        )
        .with_data(json!({ "key": k.key, "bzimage": k.bzimage, "vmlinux": k.vmlinux })),
        None => Check::warn(
            "guest-kernel",
            Needed::Vm,
            "not built yet (VM mode builds it on first use, ~7 min on 2 cores)",
            "run `sandbox kernel build`",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_binary_is_recognised_as_static_or_not() {
        // The workspace links every binary statically (.cargo/config.toml).
        let exe = std::env::current_exe().unwrap();
        assert_eq!(is_static_elf(&exe), Some(true));
        assert_eq!(is_static_elf(Path::new("/proc/self/status")), None);
    }
}
