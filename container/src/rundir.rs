//! The run directory `$SANDBOX_HOME/run/<id>`: the container's overlay upper and work dirs, its
//! root mount point, its Plan, and `owner.pid` naming the launcher that owns it.
//!
//! [`RunDir`] owns the directory: dropping it unmounts anything left under it (lazily) and
//! removes it. `sandbox gc` uses [`stale`] to find directories whose owner is gone.

use crate::ContainerError;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Name of the file holding the owner's pid and start time.
const OWNER_FILE: &str = "owner.pid";

/// The directory holding every run directory.
pub fn run_root() -> PathBuf {
    sandbox_protocol::paths::sandbox_home().join("run")
}

/// A container's run directory; removed (with anything mounted under it) when dropped.
#[derive(Debug)]
pub struct RunDir {
    id: String,
    path: PathBuf,
}

impl RunDir {
    /// Creates `run/<id>` with a fresh short id (8 hex digits, so `sbx<id>` fits an interface
    /// name), its `upper`, `work` and `rootfs` dirs, and `owner.pid` for this process.
    pub fn create() -> Result<RunDir, ContainerError> {
        let root = run_root();
        let io_err = |path: &Path, source| ContainerError::RunDir {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(&root).map_err(|e| io_err(&root, e))?;
        let mut attempt = 0;
        let (id, path) = loop {
            let id = new_id(attempt);
            let path = root.join(&id);
            match fs::create_dir(&path) {
                Ok(()) => break (id, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
                Err(e) => return Err(io_err(&path, e)),
            }
        };
        // From here on the directory exists, so an early return must remove it: the owner does.
        let dir = RunDir { id, path };
        for sub in ["upper", "work", "rootfs"] {
            let p = dir.path.join(sub);
            fs::create_dir(&p).map_err(|e| io_err(&p, e))?;
        }
        let owner = dir.path.join(OWNER_FILE);
        let me = std::process::id();
        let start = process_start_time(me).unwrap_or(0);
        fs::write(&owner, format!("{me} {start}\n")).map_err(|e| io_err(&owner, e))?;
        Ok(dir)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The overlay's upper dir: every write the container makes lands here.
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }

    /// The overlay's work dir (same filesystem as `upper`, as overlayfs requires).
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }

    /// Where the overlay is mounted (inside the container's own mount namespace only).
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }

    /// The Plan handed to the guest program.
    pub fn plan(&self) -> PathBuf {
        self.path.join("plan.json")
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Unmounts (lazily) whatever is mounted under `path`, then removes it. Errors are reported on
/// stderr: a leftover must not go unnoticed, but must not hide the container's own result.
pub fn remove(path: &Path) {
    for mount in mounts_under(path) {
        // The overlay normally lives only in the container's mount namespace and is gone with
        // it; a mount visible here is a leftover, and a lazy detach is what removes it safely.
        if let Err(e) = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("sandbox: cannot unmount {}: {e}", mount.display());
        }
    }
    let mut result = fs::remove_dir_all(path);
    if matches!(&result, Err(e) if e.kind() == io::ErrorKind::PermissionDenied) {
        // overlayfs leaves `work/work` with mode 000; without CAP_DAC_OVERRIDE (rootless) even
        // its owner cannot empty it until the mode allows.
        open_up(path);
        result = fs::remove_dir_all(path);
    }
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::NotFound {
            eprintln!("sandbox: cannot remove {}: {e}", path.display());
        }
    }
}

/// Gives the owner full access to every directory under `path` (links are not followed).
fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            open_up(&entry.path());
        }
    }
}

/// Mount points at or under `path` in this process's mount table, deepest first.
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = sandbox_protocol::mountinfo::current()
        .unwrap_or_default()
        .into_iter()
        .map(|m| PathBuf::from(m.target))
        .filter(|p| p.starts_with(path))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// A short id that is unlikely to repeat: 8 hex digits from the kernel's random source, or from
/// the pid and clock when that cannot be read.
fn new_id(attempt: u32) -> String {
    let mut buf = [0u8; 4];
    let random = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    let value = match random {
        Ok(()) => u32::from_le_bytes(buf),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            nanos ^ std::process::id().rotate_left(16) ^ attempt.wrapping_mul(0x9e37_79b9)
        }
    };
    format!("{value:08x}")
}

/// The start time of `pid` (field 22 of /proc/PID/stat, in clock ticks since boot); with the pid
/// it identifies a process even after its pid is reused.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A run directory whose owner process is gone.
#[derive(Debug, Clone)]
pub struct StaleRun {
    pub id: String,
    pub path: PathBuf,
}

/// Run directories whose owner (pid + start time in `owner.pid`) no longer runs. A directory
/// without a readable owner file counts as stale only when it is older than a minute, so a
/// launcher that is just creating it is left alone.
pub fn stale() -> io::Result<Vec<StaleRun>> {
    let root = run_root();
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Some(id) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let alive = match fs::read_to_string(path.join(OWNER_FILE)) {
            Ok(text) => owner_alive(&text),
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().map(|d| d.as_secs() < 60).unwrap_or(true))
                .unwrap_or(false),
        };
        if !alive {
            out.push(StaleRun { id, path });
        }
    }
    Ok(out)
}

fn owner_alive(text: &str) -> bool {
    let mut fields = text.split_whitespace();
    let Some(pid) = fields.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let recorded: u64 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    match process_start_time(pid) {
        None => false,
        Some(start) => recorded == 0 || start == recorded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        assert!(owner_alive(&format!("{me} {start}")));
        assert!(!owner_alive(&format!("{me} {}", start + 1)));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn ids_are_short_enough_for_interface_names() {
        let id = new_id(0);
        assert_eq!(id.len(), 8);
        assert!(format!("sbx{id}").len() <= 15);
    }
}
