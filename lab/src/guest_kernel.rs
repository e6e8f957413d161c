//! The guest kernel in L1: the host's build (`sandbox_kernel::cached()`) is shipped at the same
//! place under L1's `$SANDBOX_CACHE`, so VM mode in L1 boots exactly the kernel the host built.
//!
//! L1 has no kernel source tarball, so its `sandbox_kernel::cached()` cannot compute the key; it
//! takes the newest entry whose `inputs.json` records the builder version and fragment compiled
//! into its `sandbox` binary, which is the host's. So the entry is shipped with its
//! `inputs.json`. `cached()` on the host writes that record into entries built before it
//! existed; where it could not (a read-only cache), the record is made here from the host's
//! inputs, and only if they give the entry's key. Without a record nothing is shipped, and VM
//! mode says the kernel is not built — never a different kernel.

use crate::payload::Include;
use sandbox_kernel::{KernelArtifacts, KernelOptions, KeyInputs};
use std::path::Path;

/// What L1 gets: the kernel's files, and generated files (L1 path, content).
#[derive(Debug, Default)]
pub struct GuestKernel {
    pub files: Vec<Include>,
    pub generated: Vec<(String, Vec<u8>)>,
}

/// The host's built guest kernel with its record (empty when none is built).
pub fn guest_kernel() -> GuestKernel {
    let Some(k) = sandbox_kernel::cached() else {
        return GuestKernel::default();
    };
    ship(&k, &sandbox_protocol::paths::sandbox_cache(), || {
        KernelOptions::default().key_inputs().ok()
    })
}

/// The entry `k` of `host_cache` as L1 gets it; `record` gives its inputs when the entry has no
/// `inputs.json`.
fn ship(k: &KernelArtifacts, host_cache: &Path, record: impl FnOnce() -> Option<KeyInputs>) -> GuestKernel {
    let kernel: Option<Vec<Include>> = [&k.bzimage, &k.vmlinux, &k.config]
        .iter()
        .map(|p| Include::from_cache(host_cache, p))
        .collect();
    let (Some(mut files), Some(inputs)) = (kernel, Include::from_cache(host_cache, &k.inputs)) else {
        return GuestKernel::default();
    };
    let mut generated = Vec::new();
    if k.inputs.is_file() {
        files.push(inputs);
    } else {
        match record().filter(|r| r.key == k.key) {
            Some(r) => generated.push((inputs.l1_path, r.to_json().into_bytes())),
            None => return GuestKernel::default(),
        }
    }
    GuestKernel { files, generated }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init_script::L1_SANDBOX_CACHE;
    use std::path::PathBuf;

    const KEY: &str = "0123456789abcdef";

    fn entry(cache: &Path, with_record: bool) -> KernelArtifacts {
        let dir = cache.join("kernel").join(KEY);
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["bzImage", "vmlinux", "config"] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        if with_record {
            record(KEY).write(&dir).unwrap();
        }
        KernelArtifacts {
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            config: dir.join("config"),
            build_log: dir.join("build.log"),
            inputs: dir.join(sandbox_kernel::INPUTS_FILE),
            key: KEY.to_string(),
        }
    }

    fn record(key: &str) -> KeyInputs {
        KeyInputs {
            key: key.to_string(),
            builder_version: sandbox_kernel::BUILDER_VERSION.to_string(),
            fragment_sha256: "f".repeat(64),
            source_sha256: "0".repeat(64),
            source: PathBuf::from(sandbox_kernel::DEFAULT_SOURCE),
            source_package: None,
            source_package_version: None,
        }
    }

    fn l1_paths(g: &GuestKernel) -> Vec<String> {
        g.files.iter().map(|i| i.l1_path.clone()).collect()
    }

    fn l1(name: &str) -> String {
        format!("{L1_SANDBOX_CACHE}/kernel/{KEY}/{name}")
    }

    #[test]
    fn an_entry_is_shipped_with_its_record_and_nothing_else() {
        let cache = tempfile::tempdir().unwrap();
        let k = entry(cache.path(), true);
        let g = ship(&k, cache.path(), || panic!("the entry has its record"));
        assert_eq!(
            l1_paths(&g),
            [l1("bzImage"), l1("vmlinux"), l1("config"), l1("inputs.json")]
        );
        assert!(g.generated.is_empty(), "{:?}", g.generated);
    }

    #[test]
    fn an_entry_without_a_record_gets_one_only_for_its_own_key() {
        let cache = tempfile::tempdir().unwrap();
        let k = entry(cache.path(), false);
        let g = ship(&k, cache.path(), || Some(record(KEY)));
        assert_eq!(l1_paths(&g), [l1("bzImage"), l1("vmlinux"), l1("config")]);
        assert_eq!(g.generated.len(), 1);
        assert_eq!(g.generated[0].0, l1("inputs.json"));
        assert_eq!(g.generated[0].1, record(KEY).to_json().into_bytes());

        // Inputs that give another key describe another kernel: nothing is shipped.
        let g = ship(&k, cache.path(), || Some(record("fedcba9876543210")));
        assert!(g.files.is_empty() && g.generated.is_empty(), "{g:?}");
        let g = ship(&k, cache.path(), || None);
        assert!(g.files.is_empty() && g.generated.is_empty(), "{g:?}");
    }

    #[test]
    fn the_hosts_built_kernel_is_shipped_with_its_record() {
        // Only meaningful where a guest kernel is built (CI builds it before the tests).
        let Some(k) = sandbox_kernel::cached() else {
            panic!("no guest kernel is built: run `sandbox kernel build` first");
        };
        assert!(k.inputs.is_file(), "cached() wrote no {}", k.inputs.display());
        let g = guest_kernel();
        let paths = l1_paths(&g);
        assert_eq!(paths.len(), 4, "{paths:?}");
        assert!(
            paths
                .iter()
                .all(|p| p.starts_with(&format!("{L1_SANDBOX_CACHE}/kernel/{}/", k.key))),
            "{paths:?}"
        );
        assert!(g.generated.is_empty(), "{:?}", g.generated);
    }
}
