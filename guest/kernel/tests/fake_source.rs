//! The builder's caching, publishing and failure handling, run fast against a fake "kernel
//! source" tarball whose Makefile imitates kbuild's targets (tinyconfig, olddefconfig, bzImage,
//! vmlinux) — the real compile is covered by `tests/build.rs`.

mod support;

use sandbox_kernel::{build, cached_with, KernelError};
use support::{cache_entries, options};

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
    // The entry records its key's inputs.
    let inputs = sandbox_kernel::KeyInputs::read(k.inputs.parent().unwrap()).unwrap();
    assert_eq!(inputs.key, k.key);
    assert_eq!(inputs.builder_version, sandbox_kernel::BUILDER_VERSION);
    assert_eq!(inputs.source, opts.source);
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
