//! The fake kernel source shared by the fast builder tests: a tarball whose Makefile imitates
//! kbuild's targets (tinyconfig, olddefconfig, bzImage, vmlinux), and options that build from it
//! into a cache inside a temporary directory.

use sandbox_kernel::KernelOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Makefile with kbuild's targets; `bzImage` fails when the source holds a file named FAIL.
const MAKEFILE: &str = "\
tinyconfig:
\t@echo '  HOSTCC  scripts/basic/fixdep'
\t@echo '# tiny' > $(O)/.config
olddefconfig:
\t@echo '  SYNC    include/config/auto.conf'
bzImage:
\t@echo '  CC      kernel/fork.o'
\t@echo '  CC      kernel/exit.o'
\t@echo built >> $(O)/../make-runs
\t@if [ -e FAIL ]; then echo 'kernel/fork.c:1: error: boom'; exit 2; fi
\t@mkdir -p $(O)/arch/x86/boot
\t@printf 'bz' > $(O)/arch/x86/boot/bzImage
vmlinux:
\t@printf 'elf' > $(O)/vmlinux
";

/// Packs the fake source (failing to build when `fail`) into `work/linux-fake.tar.xz`.
pub fn fake_tarball(work: &Path, fail: bool) -> PathBuf {
    let src = work.join("linux-fake");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("Makefile"), MAKEFILE).unwrap();
    std::fs::write(src.join("Kconfig"), "").unwrap();
    if fail {
        std::fs::write(src.join("FAIL"), "").unwrap();
    }
    let tarball = work.join("linux-fake.tar.xz");
    let status = Command::new("tar")
        .arg("-cJf")
        .arg(&tarball)
        .arg("-C")
        .arg(work)
        .arg("linux-fake")
        .status()
        .expect("tar (package tar) and xz (package xz-utils) are needed");
    assert!(status.success());
    tarball
}

/// Options building the fake source into `work/cache`.
pub fn options(work: &Path, fail: bool) -> KernelOptions {
    KernelOptions {
        source: fake_tarball(work, fail),
        cache_dir: work.join("cache"),
        extra_fragment: Vec::new(),
        jobs: 2,
        progress: false,
    }
}

/// The sorted names in a cache directory.
pub fn cache_entries(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
