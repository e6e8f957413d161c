//! The builder's caching, publishing and failure handling, run fast against a fake "kernel
//! source" tarball whose Makefile imitates kbuild's targets (tinyconfig, olddefconfig, bzImage,
//! vmlinux) — the real compile is covered by `tests/build.rs`.

use sandbox_kernel::{build, cached_with, KernelError, KernelOptions};
use std::path::Path;
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

fn fake_tarball(work: &Path, fail: bool) -> std::path::PathBuf {
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

fn options(work: &Path, fail: bool) -> KernelOptions {
    KernelOptions {
        source: fake_tarball(work, fail),
        cache_dir: work.join("cache"),
        extra_fragment: Vec::new(),
        jobs: 2,
        progress: false,
    }
}

fn cache_entries(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_successful_build_is_published_once_and_then_served_from_the_cache() {
    let work = tempfile::tempdir().unwrap();
    let opts = options(work.path(), false);
    let k = build(&opts).unwrap();
    assert_eq!(std::fs::read(&k.bzimage).unwrap(), b"bz");
    assert_eq!(std::fs::read(&k.vmlinux).unwrap(), b"elf");
    assert!(std::fs::read_to_string(&k.config)
        .unwrap()
        .contains("CONFIG_PVH=y"));
    assert!(std::fs::read_to_string(&k.build_log)
        .unwrap()
        .contains("  CC      kernel/fork.o"));
    assert_eq!(cached_with(&opts), Some(k.clone()));
    // The build directory is gone once published; the source stays for other variants.
    let names = cache_entries(&opts.cache_dir);
    assert!(
        names.contains(&k.key) && !names.iter().any(|n| n.starts_with("build-")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("src-")), "{names:?}");

    let again = build(&opts).unwrap();
    assert_eq!(again, k);
    let runs = std::fs::read_to_string(opts.cache_dir.join("make-runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "make ran again for an unchanged key");
}

#[test]
fn a_failed_build_shows_the_log_tail_and_publishes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let opts = options(work.path(), true);
    let key = opts.key().unwrap();
    let err = build(&opts).unwrap_err();
    let KernelError::Make {
        ref log, ref tail, ..
    } = err
    else {
        panic!("expected a make failure, got {err}")
    };
    assert!(tail.contains("error: boom"), "{tail}");
    assert!(log.is_file());
    let msg = err.to_string();
    assert!(
        msg.contains("error: boom") && msg.contains(&log.display().to_string()),
        "{msg}"
    );
    // No entry, no staging directory: only the source, the failed build dir (for the log) and locks.
    let names = cache_entries(&opts.cache_dir);
    assert!(!names.contains(&key), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
    assert_eq!(cached_with(&opts), None);
}

#[test]
fn a_missing_tarball_names_the_package_to_install() {
    let work = tempfile::tempdir().unwrap();
    let mut opts = options(work.path(), false);
    opts.source = work.path().join("linux-source-6.1.tar.xz");
    let err = build(&opts).unwrap_err().to_string();
    assert!(err.contains("apt-get install linux-source-6.1"), "{err}");
}
