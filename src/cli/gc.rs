//! `sandbox gc`: remove what sandboxes whose launcher is gone left on the host (run
//! directories and their mounts, cgroups, veth pairs).

/// Remove leftovers of sandboxes whose launcher no longer runs.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<i32> {
    let report = sandbox_core::gc::gc(&sandbox_core::Root::run());
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
        if report.run_dirs.is_empty() && report.cgroups.is_empty() && report.links.is_empty() {
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
