//! `sandbox gc`: removes what sandboxes whose holder is gone left behind — their directories
//! (unmounting anything under them), their cgroups and their network links.
//!
//! A sandbox's state names its holder (pid and start time): when that process is gone, nobody
//! will remove the sandbox's host objects any more. The cgroups and links its state recorded go
//! with it; `sandbox/<id>` cgroups and `sbx<id>` links of a dead sandbox that died before its
//! state recorded them are found by id. Cgroups and links are host-wide and other homes'
//! sandboxes have theirs there too: a `sandbox/<id>` cgroup with no directory here at all is
//! removed only when it is an orphan for sure — no process in it, and older than a minute.

use crate::state::{self, Liveness, Root, STATE_FILE};
use sandbox_container::{cgroups, net};
use std::fs;
use std::time::Duration;

/// What [`gc`] removed, and what it could not.
#[derive(Debug, Default)]
pub struct GcReport {
    pub run_dirs: Vec<String>,
    pub cgroups: Vec<String>,
    pub links: Vec<String>,
    pub errors: Vec<String>,
}

/// How old a directory without a readable state must be before it counts as abandoned (a
/// launcher may be writing it right now).
const GRACE: Duration = Duration::from_secs(60);

/// Removes the leftovers of dead sandboxes under `root` (`sandbox run`'s).
pub fn gc(root: &Root) -> GcReport {
    let mut report = GcReport::default();
    // Cgroups and links are listed before the directories are read: a launcher creates its
    // directory before its cgroup, so a live one is always seen below.
    let cgroup_ids = cgroups::list_ids();
    let link_ids = net::list_ids();
    let existing = root.list();
    let stale: Vec<String> = existing.iter().filter(|id| is_stale(root, id)).cloned().collect();

    for id in &stale {
        let dir = root.path().join(id);
        if let Ok(state) = state::SandboxDir::load_at(&dir) {
            if !state.cgroup_dirs.is_empty() {
                match cgroups::remove_recorded(&state.cgroup_dirs, &state.cgroup_created) {
                    Ok(()) => report.cgroups.push(id.clone()),
                    Err(e) => report.errors.push(format!("cgroups of sandbox {id}: {e}")),
                }
            }
        }
    }
    let orphan = |id: &str| !existing.iter().any(|e| e == id) && cgroup_is_abandoned(id);
    for id in cgroup_ids.iter().filter(|id| stale.contains(id) || orphan(id)) {
        match cgroups::remove_stale(id) {
            Ok(()) => {
                if !report.cgroups.contains(id) {
                    report.cgroups.push(id.clone());
                }
            }
            Err(e) => report.errors.push(format!("cgroup sandbox/{id}: {e}")),
        }
    }
    for id in link_ids.iter().filter(|id| stale.contains(id)) {
        match net::remove_stale(id) {
            Ok(()) => report.links.push(id.clone()),
            Err(e) => report
                .errors
                .push(format!("link {}: {e}", net::host_name_for(id))),
        }
    }
    for id in stale {
        let path = root.path().join(&id);
        match state::remove_dir(&path) {
            Ok(()) => report.run_dirs.push(id),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report
}

/// Whether sandbox `id`'s holder is gone (or its directory has no state and is old).
fn is_stale(root: &Root, id: &str) -> bool {
    let dir = root.path().join(id);
    match state::SandboxDir::load_at(&dir) {
        Ok(state) => state.holder.liveness() != Liveness::Alive,
        Err(_) => fs::metadata(dir.join(STATE_FILE))
            .or_else(|_| fs::metadata(&dir))
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().map(|d| d >= GRACE).unwrap_or(false))
            .unwrap_or(true),
    }
}

/// Whether `sandbox/<id>` holds no process on any hierarchy and was created over a minute ago.
fn cgroup_is_abandoned(id: &str) -> bool {
    let Ok(mounts) = cgroups::Mounts::read() else {
        return false;
    };
    mounts.all_roots().iter().all(|root| {
        let dir = root.join("sandbox").join(id);
        if !dir.exists() {
            return true;
        }
        let empty = fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
        let old = fs::metadata(&dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|d| d >= GRACE));
        empty && old
    })
}
