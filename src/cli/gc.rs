//! `sandbox gc`: remove what sandboxes whose launcher is gone left on the host (run
//! directories and their mounts, cgroups, veth pairs), and what killed image imports left in
//! the store (staging directories).

/// Remove leftovers of sandboxes whose launcher no longer runs, and of killed image imports.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<i32> {
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
