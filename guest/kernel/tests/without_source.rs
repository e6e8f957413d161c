//! Finding a built kernel when the source tarball is absent (as in the lab's L1, which is shipped
//! the host's entry): by the entry's `inputs.json`, only when it records the current builder
//! version and fragment; and entries published before `inputs.json` existed get it written by a
//! lookup by key on the host.

mod support;

use sandbox_kernel::{build, cached_with, KernelArtifacts, KernelOptions, KeyInputs, BUILDER_VERSION};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use support::{cache_entries, options};

/// Options like `opts` but with no tarball and another cache (what L1 sees).
fn without_tarball(opts: &KernelOptions, cache: &Path) -> KernelOptions {
    KernelOptions {
        source: cache.join("missing").join("linux-source-6.1.tar.xz"),
        cache_dir: cache.to_path_buf(),
        ..opts.clone()
    }
}

/// Copies the files of entry `k` (only those: no source, no source-ids) into `cache`.
fn ship(k: &KernelArtifacts, cache: &Path) -> PathBuf {
    let to = cache.join(&k.key);
    fs::create_dir_all(&to).unwrap();
    for from in [&k.bzimage, &k.vmlinux, &k.config, &k.inputs] {
        fs::copy(from, to.join(from.file_name().unwrap())).unwrap();
    }
    to
}

/// A hand-made complete entry `key` in `cache` recording `inputs` (if any).
fn hand_made(cache: &Path, key: &str, inputs: Option<&KeyInputs>) -> PathBuf {
    let dir = cache.join(key);
    fs::create_dir_all(&dir).unwrap();
    for name in ["bzImage", "vmlinux", "config"] {
        fs::write(dir.join(name), name).unwrap();
    }
    if let Some(inputs) = inputs {
        inputs.write(&dir).unwrap();
    }
    dir
}

fn current_inputs(key: &str) -> KeyInputs {
    KeyInputs {
        key: key.to_string(),
        builder_version: BUILDER_VERSION.to_string(),
        fragment_sha256: KernelOptions::default().fragment_sha256().unwrap(),
        source_sha256: "0".repeat(64),
        source: PathBuf::from("/usr/src/linux-source-6.1.tar.xz"),
        source_package: Some("linux-source-6.1".to_string()),
        source_package_version: Some("6.1.0-1".to_string()),
    }
}

#[test]
fn a_shipped_entry_is_found_without_the_tarball_when_builder_and_fragment_match() {
    let work = tempfile::tempdir().unwrap();
    let opts = options(work.path(), false);
    let k = build(&opts).unwrap();
    let l1 = work.path().join("l1-cache");
    let dir = ship(&k, &l1);
    let l1_opts = without_tarball(&opts, &l1);
    assert!(!l1_opts.source.exists());

    let found = cached_with(&l1_opts).expect("the shipped entry is found without the tarball");
    assert_eq!(found.key, k.key);
    assert_eq!(found.vmlinux, dir.join("vmlinux"));
    assert_eq!(fs::read(&found.bzimage).unwrap(), b"bz");
    // Looking up created nothing next to it.
    assert_eq!(cache_entries(&l1), std::slice::from_ref(&k.key));

    // Another fragment asks for another kernel: the entry is not taken for it.
    let mut other = l1_opts.clone();
    other.extra_fragment = vec!["CONFIG_IKCONFIG=y".to_string()];
    assert_eq!(cached_with(&other), None);
    // A comment is not a symbol: still the same kernel.
    let mut comment = l1_opts.clone();
    comment.extra_fragment = vec!["# a comment".to_string()];
    assert_eq!(cached_with(&comment).map(|k| k.key), Some(k.key.clone()));
}

#[test]
fn a_hand_made_entry_is_taken_only_with_the_current_builder_fragment_and_its_own_key() {
    let cache = tempfile::tempdir().unwrap();
    let opts = without_tarball(&KernelOptions::default(), cache.path());
    let key = "0123456789abcdef";
    let dir = hand_made(cache.path(), key, Some(&current_inputs(key)));
    assert_eq!(cached_with(&opts).map(|k| k.vmlinux), Some(dir.join("vmlinux")));

    let mut old_builder = current_inputs(key);
    old_builder.builder_version = "sandbox-kernel builder 0".to_string();
    old_builder.write(&dir).unwrap();
    assert_eq!(
        cached_with(&opts),
        None,
        "an entry of another builder version was taken"
    );

    let mut other_fragment = current_inputs(key);
    other_fragment.fragment_sha256 = "f".repeat(64);
    other_fragment.write(&dir).unwrap();
    assert_eq!(cached_with(&opts), None, "an entry of another fragment was taken");

    // A record copied into another entry's directory does not vouch for it.
    current_inputs("fedcba9876543210").write(&dir).unwrap();
    assert_eq!(cached_with(&opts), None, "a record naming another key was taken");

    // An incomplete entry is not a kernel.
    current_inputs(key).write(&dir).unwrap();
    fs::remove_file(dir.join("vmlinux")).unwrap();
    assert_eq!(cached_with(&opts), None, "an entry without vmlinux was taken");

    // Nor is an entry with an unreadable record.
    fs::write(dir.join("vmlinux"), "vmlinux").unwrap();
    fs::write(dir.join(sandbox_kernel::INPUTS_FILE), "{").unwrap();
    assert_eq!(
        cached_with(&opts),
        None,
        "an entry with a malformed record was taken"
    );
}

#[test]
fn of_two_matching_entries_the_newest_build_is_taken() {
    let cache = tempfile::tempdir().unwrap();
    let opts = without_tarball(&KernelOptions::default(), cache.path());
    let now = SystemTime::now();
    for (key, age) in [
        ("aaaaaaaaaaaaaaaa", 60),
        ("bbbbbbbbbbbbbbbb", 3600),
        ("cccccccccccccccc", 0),
    ] {
        let dir = hand_made(cache.path(), key, Some(&current_inputs(key)));
        let vmlinux = fs::File::options().write(true).open(dir.join("vmlinux")).unwrap();
        vmlinux.set_modified(now - Duration::from_secs(age)).unwrap();
    }
    // The newest one is of another fragment: the newest matching one wins.
    let mut stale = current_inputs("cccccccccccccccc");
    stale.fragment_sha256 = "f".repeat(64);
    stale.write(&cache.path().join("cccccccccccccccc")).unwrap();
    assert_eq!(
        cached_with(&opts).map(|k| k.key).as_deref(),
        Some("aaaaaaaaaaaaaaaa")
    );
}

#[test]
fn an_entry_from_before_inputs_json_gets_it_from_a_lookup_by_key() {
    let work = tempfile::tempdir().unwrap();
    let opts = options(work.path(), false);
    let k = build(&opts).unwrap();
    let recorded = fs::read_to_string(&k.inputs).unwrap();
    fs::remove_file(&k.inputs).unwrap();

    // Without the tarball, an entry without a record is not guessed at.
    let l1 = work.path().join("l1-cache");
    fs::create_dir_all(l1.join(&k.key)).unwrap();
    for from in [&k.bzimage, &k.vmlinux, &k.config] {
        fs::copy(from, l1.join(&k.key).join(from.file_name().unwrap())).unwrap();
    }
    assert_eq!(cached_with(&without_tarball(&opts, &l1)), None);

    // With it, the key finds the entry as before, and the record is written.
    assert_eq!(cached_with(&opts), Some(k.clone()));
    assert_eq!(fs::read_to_string(&k.inputs).unwrap(), recorded);
    let names = cache_entries(&opts.cache_dir.join(&k.key));
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");

    // build() on a cache hit writes it too.
    fs::remove_file(&k.inputs).unwrap();
    assert_eq!(build(&opts).unwrap(), k);
    assert_eq!(fs::read_to_string(&k.inputs).unwrap(), recorded);
}
