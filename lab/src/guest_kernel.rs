//! The guest kernel in L1: the host's build (`sandbox_kernel::cached()`) is shipped at the same
//! place under L1's `$SANDBOX_CACHE`, so VM mode in L1 boots exactly the kernel the host built.
//!
//! sandbox-kernel finds a build by a key that hashes the source tarball's sha256, and L1 has no
//! source tarball (150 MB). It keeps a record of that sha256 in `source-ids/`, valid while the
//! tarball's size and mtime match; so the lab ships an empty stand-in tarball (mtime 0, as every
//! cpio entry) and the record of the real sha256 for that stand-in. Before shipping, the host
//! computes the key through sandbox-kernel itself against the same two files in a scratch
//! directory; unless that gives the host's key, no stand-in is shipped and VM mode in L1 says the
//! kernel is not built — never a different kernel.

use crate::init_script::L1_SANDBOX_CACHE;
use crate::payload::Include;
use sandbox_kernel::KernelOptions;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// What L1 gets: the kernel's files, and generated files (L1 path, content).
#[derive(Debug, Default)]
pub struct GuestKernel {
    pub files: Vec<Include>,
    pub generated: Vec<(String, Vec<u8>)>,
}

/// The host's built guest kernel (empty when none is built), with the key stand-in when it
/// verifiably reproduces the host's key.
pub fn guest_kernel() -> GuestKernel {
    let cache = sandbox_guest::paths::sandbox_cache();
    let Some(k) = sandbox_kernel::cached() else {
        return GuestKernel::default();
    };
    let files = [k.bzimage, k.vmlinux, k.config]
        .iter()
        .filter_map(|p| Include::from_cache(&cache, p))
        .collect();
    GuestKernel {
        files,
        generated: key_stand_in(&k.key).unwrap_or_default(),
    }
}

/// The name of the `source-ids/` record for a tarball path.
fn id_name(tarball: &Path) -> String {
    let digest = Sha256::digest(tarball.as_os_str().as_encoded_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn key_stand_in(host_key: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let opts = KernelOptions::default();
    let host_record =
        fs::read_to_string(opts.cache_dir.join("source-ids").join(id_name(&opts.source))).ok()?;
    let (_, sha) = host_record.trim().rsplit_once(' ')?;
    // The stand-in is empty with mtime 0: size 0, mtime 0, 0 ns.
    let record = format!("0 0 0 {sha}\n");

    let scratch = tempfile::tempdir().ok()?;
    let stand_in = scratch.path().join("linux-source.tar.xz");
    fs::File::create(&stand_in).ok()?.set_modified(UNIX_EPOCH).ok()?;
    let cache = scratch.path().join("kernel");
    fs::create_dir_all(cache.join("source-ids")).ok()?;
    fs::write(cache.join("source-ids").join(id_name(&stand_in)), &record).ok()?;
    let check = KernelOptions {
        source: stand_in,
        cache_dir: cache,
        ..KernelOptions::default()
    };
    if check.key().ok()? != host_key {
        return None;
    }
    let l1_record = format!("{L1_SANDBOX_CACHE}/kernel/source-ids/{}", id_name(&opts.source));
    Some(vec![
        (opts.source.display().to_string(), Vec::new()),
        (l1_record, record.into_bytes()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_in_reproduces_the_host_key_when_a_kernel_is_built() {
        // Only meaningful where a guest kernel is built (CI builds it before the tests).
        let Some(k) = sandbox_kernel::cached() else {
            panic!("no guest kernel is built: run `sandbox kernel build` first");
        };
        let generated = key_stand_in(&k.key).expect("the stand-in reproduces the host's key");
        assert_eq!(generated.len(), 2);
        assert!(generated[0].1.is_empty());
    }
}
