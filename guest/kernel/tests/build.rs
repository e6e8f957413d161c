//! The full kernel build. It takes minutes on a fresh machine (scripts/test runs
//! `sandbox kernel build` first, so the suite finds it cached by content); checks the artifacts
//! and that a second build is a cache hit.

use sandbox_kernel::{build, cached_with, validate_kernel_file, KernelFormat, KernelOptions};
use std::time::Instant;

#[test]
fn the_full_build_gives_a_bzimage_and_a_vmlinux_and_is_cached() {
    let opts = KernelOptions::default();
    let started = Instant::now();
    let k = build(&opts).expect("kernel build");
    eprintln!("build: {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(validate_kernel_file(&k.bzimage).unwrap(), KernelFormat::BzImage);
    assert_eq!(
        validate_kernel_file(&k.vmlinux).unwrap(),
        KernelFormat::ElfVmlinux
    );
    assert!(std::fs::read_to_string(&k.config)
        .unwrap()
        .contains("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y"));
    assert_eq!(cached_with(&opts), Some(k.clone()));
    let again = Instant::now();
    assert_eq!(build(&opts).unwrap(), k);
    eprintln!("cached build: {:.3}s", again.elapsed().as_secs_f64());
}
