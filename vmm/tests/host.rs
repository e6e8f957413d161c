//! `run` on the host this suite runs on: a PVM host must be refused before anything is built,
//! with the error that names `sandbox lab` and `--kernel`; elsewhere the PVM error must not appear.

use std::path::{Path, PathBuf};

use sandbox_vmm::{run, DiskConfig, SerialSink, VmConfig, VmmError};

/// The smallest file the VMM accepts as an x86_64 ELF kernel (header only).
fn fake_vmlinux(dir: &Path) -> PathBuf {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
    let path = dir.join("vmlinux");
    std::fs::write(&path, h).unwrap();
    path
}

#[test]
fn run_refuses_a_pvm_host_with_the_pvm_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = VmConfig::new(
        fake_vmlinux(dir.path()),
        DiskConfig {
            path: dir.path().join("root.ext4"),
            read_only: false,
        },
    );
    config.serial = SerialSink::Null;
    let pvm_host = Path::new("/sys/module/kvm_pvm").exists();
    let result = run(config);
    if pvm_host {
        let err = result.expect_err("a PVM host must refuse to boot a standard kernel");
        assert!(matches!(err, VmmError::PvmHost), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("sandbox lab") && msg.contains("--kernel"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    } else {
        // Elsewhere the fake kernel or the missing disk stops it, never the PVM check.
        let err = result.expect_err("a header-only kernel and a missing disk cannot boot");
        assert!(!matches!(err, VmmError::PvmHost), "{err}");
    }
    // Nothing is left behind in the work directory besides what the test made.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("vmlinux")]);
}

#[test]
fn run_names_a_kernel_that_is_neither_bzimage_nor_elf() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("notes.txt");
    std::fs::write(&kernel, "not a kernel\n").unwrap();
    let config = VmConfig::new(
        kernel,
        DiskConfig {
            path: dir.path().join("root.ext4"),
            read_only: false,
        },
    );
    let err = run(config).unwrap_err();
    assert!(matches!(err, VmmError::KernelFormat { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
}

#[test]
fn run_refuses_memory_below_the_kernel_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = VmConfig::new(
        fake_vmlinux(dir.path()),
        DiskConfig {
            path: dir.path().join("root.ext4"),
            read_only: false,
        },
    );
    config.memory_mib = 8;
    let err = run(config).unwrap_err();
    assert!(matches!(err, VmmError::MemoryTooSmall { .. }), "{err}");
}
