//! `validate_kernel_file` on a fake bzImage header, a real x86-64 ELF, and junk.

use sandbox_kernel::{validate_kernel_file, KernelError, KernelFormat};

#[test]
fn a_boot_protocol_header_is_a_bzimage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bzImage");
    let mut bytes = vec![0u8; 0x400];
    bytes[0x1fe] = 0x55;
    bytes[0x1ff] = 0xaa;
    bytes[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(validate_kernel_file(&path).unwrap(), KernelFormat::BzImage);
}

#[test]
fn an_x86_64_elf_is_a_vmlinux() {
    // This test binary is an x86-64 ELF, like vmlinux.
    let exe = std::env::current_exe().unwrap();
    assert_eq!(validate_kernel_file(&exe).unwrap(), KernelFormat::ElfVmlinux);
}

#[test]
fn junk_is_neither_and_says_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk");
    std::fs::write(&path, vec![0x41u8; 4096]).unwrap();
    let err = validate_kernel_file(&path).unwrap_err();
    assert!(matches!(err, KernelError::NotAKernel { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("pass a bzImage or an ELF vmlinux") && msg.contains("junk"),
        "{msg}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let err = validate_kernel_file(std::path::Path::new("/nonexistent/bzImage")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/bzImage"), "{err}");
}
