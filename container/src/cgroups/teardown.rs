//! Emptying and removing a sandbox cgroup: `cgroup.kill` where cgroup2 has it, else SIGKILL to
//! every member, repeated until none is left (a forking workload can race one round); then the
//! directories the sandbox created are removed, nested cgroups the workload made first. A
//! directory that existed before (an OCI `cgroupsPath` someone else made) is emptied but kept.

use super::files;
use super::{CgroupError, Part};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, Pid};
use std::fs;
use std::io;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long to keep killing members and retrying a busy `rmdir` before giving up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);
/// Pause between rounds.
const ROUND: Duration = Duration::from_millis(5);

/// Kills every member of `parts` and removes their directories. Keeps going after an error, so
/// as much as possible is removed; returns the first error.
pub(super) fn remove(parts: &[Part]) -> Result<(), CgroupError> {
    if parts.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + GIVE_UP_AFTER;
    let mut first_error = kill_all(parts, deadline).err();
    for part in parts.iter().rev() {
        // The sandbox's own directory goes with everything the workload nested in it; the
        // levels above it that it created go only when empty (another sandbox may use them).
        if let Some((leaf, above)) = part.created.split_last() {
            if leaf == &part.dir {
                if let Err(e) = remove_tree(leaf, deadline) {
                    first_error.get_or_insert(e);
                }
            }
            for dir in above.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn kill_all(parts: &[Part], deadline: Instant) -> Result<(), CgroupError> {
    // Frozen members do not die until thawed.
    for part in parts {
        for (file, value) in [("freezer.state", "THAWED"), ("cgroup.freeze", "0")] {
            let path = part.dir.join(file);
            if path.exists() {
                let _ = files::write(&path, value);
            }
        }
    }
    for part in parts.iter().filter(|p| p.v2) {
        let kill_file = part.dir.join("cgroup.kill");
        if kill_file.exists() {
            // Best effort: the SIGKILL rounds below catch whatever this misses.
            let _ = files::write(&kill_file, "1");
        }
    }
    let me = getpid().as_raw();
    loop {
        let mut members = Vec::new();
        let mut busy_dir = None;
        for part in parts {
            let procs = part.dir.join("cgroup.procs");
            let pids = files::read_pids(&procs).map_err(|source| CgroupError::Io {
                action: "read".into(),
                path: procs,
                source,
            })?;
            if !pids.is_empty() && busy_dir.is_none() {
                busy_dir = Some(part.dir.clone());
            }
            members.extend(pids);
        }
        let Some(path) = busy_dir else {
            return Ok(());
        };
        members.sort_unstable();
        members.dedup();
        if Instant::now() > deadline {
            return Err(CgroupError::StillBusy { path, pids: members });
        }
        for &pid in members.iter().filter(|&&p| p > 1 && p != me) {
            // ESRCH: it exited meanwhile, which is what we want.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        sleep(ROUND);
    }
}

/// Removes `dir` and any cgroups nested in it; a cgroup whose last member is still exiting
/// answers EBUSY for a moment, so that is retried until `deadline`.
fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path(), deadline)?;
            }
        }
    }
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) && Instant::now() < deadline => {
                sleep(ROUND)
            }
            Err(source) => {
                return Err(CgroupError::Io {
                    action: "remove".into(),
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}
