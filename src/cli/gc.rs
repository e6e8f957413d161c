//! `sandbox gc`: remove what sandboxes whose launcher is gone left on the host (run
//! directories and their mounts, cgroups, veth pairs), and what killed image imports left in
//! the store (staging directories). With `--caches`, also sweep `$SANDBOX_CACHE` down to what
//! is in use: the newest few lab initramfs archives and base disks, the current guest kernel.

use std::path::PathBuf;

const CACHES_HELP: &str = "\
With --caches, the rebuildable caches under $SANDBOX_CACHE are swept too, each reported with
what it keeps and frees:
  lab/      the L1 initramfs archives (one per build of the binaries shipped into L1): the 3
            most recently used stay
  disks/    base disks, per purpose (image root disks, OCI bundle disks): the 8 most recently
            used of each stay
  kernel/   the guest kernel: the current key's entry and its unpacked source stay; entries
            of other keys, other sources and leftover build directories go
Builds sweep the lab and disk caches themselves, keeping also what was used in the last
15 minutes; --caches does not wait for that.";

/// Remove leftovers of sandboxes whose launcher no longer runs, and of killed image imports.
#[derive(Debug, clap::Args)]
#[command(after_help = CACHES_HELP)]
pub struct Args {
    /// Also sweep the caches under $SANDBOX_CACHE (lab initramfs, base disks, guest kernel).
    #[arg(long)]
    caches: bool,
}

/// One cache's sweep, for the report.
struct Swept {
    name: &'static str,
    removed: Vec<(PathBuf, u64)>,
    kept: Vec<(PathBuf, u64)>,
    note: Option<String>,
}

fn mib(entries: &[(PathBuf, u64)]) -> f64 {
    entries.iter().map(|e| e.1).sum::<u64>() as f64 / 1048576.0
}

/// Sweeps the caches and reports each: what went (each path) and what stays.
fn sweep_caches() {
    let cache = sandbox_protocol::paths::sandbox_cache();
    let lab = sandbox_lab::initramfs::sweep(&cache.join("lab"), None, None);
    let disks = sandbox_disk::cache::sweep(&sandbox_disk::disk_cache(), None);
    let kernel = sandbox_kernel::sweep_cache(&sandbox_kernel::KernelOptions::default());
    let all = [
        Swept {
            name: "lab initramfs",
            removed: lab.removed,
            kept: lab.kept,
            note: None,
        },
        Swept {
            name: "base disks",
            removed: disks.removed,
            kept: disks.kept,
            note: None,
        },
        Swept {
            name: "guest kernel",
            removed: kernel.removed,
            kept: kernel.kept,
            note: kernel.note,
        },
    ];
    eprintln!("caches under {}:", cache.display());
    for s in &all {
        for (path, bytes) in &s.removed {
            eprintln!(
                "  removed {} ({:.1} MiB)",
                path.display(),
                *bytes as f64 / 1048576.0
            );
        }
        eprintln!(
            "  {:<14} freed {:>8.1} MiB in {:>3} entries; keeps {:>8.1} MiB in {} entries",
            s.name,
            mib(&s.removed),
            s.removed.len(),
            mib(&s.kept),
            s.kept.len()
        );
        if let Some(note) = &s.note {
            eprintln!("  {:<14} {note}", "");
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    if args.caches {
        sweep_caches();
    }
    let mut report = sandbox_core::gc::gc(&sandbox_core::Root::run());
    let mut staging = Vec::new();
    match sandbox_image::Store::open_default().and_then(|store| store.remove_stale_staging()) {
        Ok(removed) => staging = removed,
        Err(e) => report.errors.push(format!("the image store: {e}")),
    }
    for dir in &staging {
        eprintln!(
            "removed staging directory {} of an import that no longer runs",
            dir.display()
        );
    }
    for id in &report.run_dirs {
        eprintln!("removed run directory of sandbox {id}");
    }
    for id in &report.cgroups {
        eprintln!("removed cgroup sandbox/{id}");
    }
    for id in &report.links {
        eprintln!("removed network link of sandbox {id}");
    }
    if report.errors.is_empty() {
        if report.run_dirs.is_empty()
            && report.cgroups.is_empty()
            && report.links.is_empty()
            && staging.is_empty()
        {
            eprintln!("nothing to remove");
        }
        return Ok(0);
    }
    for e in &report.errors {
        eprintln!("sandbox gc: {e}");
    }
    anyhow::bail!(
        "{} leftover(s) could not be removed (see above); re-run as root or remove them by hand",
        report.errors.len()
    )
}
