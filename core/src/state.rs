//! Where a sandbox lives between commands: a directory per sandbox under a root, holding its
//! `state.json` — what it is, which process holds it, which host objects it made — and its
//! working files (an overlay's upper and work dirs, the Plan, a VM's disks, the OCI exec FIFO).
//!
//! Two roots: `$SANDBOX_HOME/run` for `sandbox run` (the launcher holds each sandbox until it
//! ends), and the OCI runtime's `--root` (`/run/sandbox-runtime`; the container's first process
//! holds it after `create` returns). Every later command finds a sandbox by id there, and
//! `sandbox gc` knows from the holder's pid (and its start time, against pid reuse) which ones
//! are dead. Directories are 0700 and `state.json` 0600: they name host paths and hold the
//! environment a sandbox was given.
//!
//! [`SandboxDir`] owns the directory while it is being created: dropping it before
//! [`SandboxDir::keep`] unmounts whatever is left under it (lazily) and removes it.

use crate::error::CoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The version of `state.json` this code writes and reads.
pub const STATE_VERSION: u32 = 1;
/// The file name of a sandbox's state.
pub const STATE_FILE: &str = "state.json";
/// The FIFO an OCI container's first process waits on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";

/// A directory of sandbox directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// `sandbox run`'s root: `$SANDBOX_HOME/run`.
    pub fn run() -> Root {
        Root::at(sandbox_protocol::paths::sandbox_home().join("run"))
    }

    /// A root at `path` (the OCI runtime's `--root`).
    pub fn at(path: impl Into<PathBuf>) -> Root {
        Root { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory of a new sandbox: `id` when given (refused if it exists), else a
    /// fresh short id.
    pub fn create(&self, id: Option<&str>) -> Result<SandboxDir, CoreError> {
        let io_err = |path: &Path, source| CoreError::Io {
            what: "cannot create the sandbox directory",
            path: path.to_path_buf(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|e| io_err(&self.path, e))?;
        let mut attempt = 0;
        loop {
            let chosen = match id {
                Some(id) => {
                    crate::id::check(id)?;
                    id.to_string()
                }
                None => crate::id::new_short(attempt),
            };
            let path = self.path.join(&chosen);
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok(SandboxDir {
                        id: chosen,
                        path,
                        owned: true,
                    })
                }
                // A named id is taken: final. A generated one collided: draw again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && (id.is_some() || attempt >= 16) => {
                    return Err(CoreError::Exists { id: chosen });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => attempt += 1,
                Err(e) => return Err(io_err(&path, e)),
            }
        }
    }

    /// A fresh short id no sandbox under this root has now.
    pub fn new_id(&self) -> String {
        (0..16)
            .map(crate::id::new_short)
            .find(|id| !self.path.join(id).exists())
            .unwrap_or_else(|| crate::id::new_short(16))
    }

    /// The directory of sandbox `id`, which must exist.
    pub fn open(&self, id: &str) -> Result<SandboxDir, CoreError> {
        crate::id::check(id)?;
        let path = self.path.join(id);
        if !path.join(STATE_FILE).is_file() {
            return Err(CoreError::NotFound { id: id.to_string() });
        }
        Ok(SandboxDir {
            id: id.to_string(),
            path,
            owned: false,
        })
    }

    /// The ids of the sandboxes under this root, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(&self.path)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// One sandbox's directory.
#[derive(Debug)]
pub struct SandboxDir {
    id: String,
    path: PathBuf,
    /// Removed when dropped (until [`SandboxDir::keep`]).
    owned: bool,
}

impl SandboxDir {
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

    /// The OCI exec FIFO.
    pub fn fifo(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    /// Creates the overlay's directories. The upper dir's root is the container's `/`, so it has
    /// the usual 0755 (the sandbox directory around it keeps host users out). With `owner` (the
    /// host uid and gid of a `--userns` container's root, which mounts the overlay and writes
    /// through it), the upper and work dirs are that owner's; the mount point stays root's.
    pub fn make_overlay_dirs(&self, owner: Option<(u32, u32)>) -> Result<(), CoreError> {
        for (p, mode, owned) in [
            (self.upper(), 0o755, true),
            (self.work(), 0o700, true),
            (self.rootfs(), 0o755, false),
        ] {
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
            let made = fs::DirBuilder::new().mode(mode).create(&p);
            nix::sys::stat::umask(old);
            made.map_err(|source| CoreError::Io {
                what: "cannot create",
                path: p.clone(),
                source,
            })?;
            if let Some((uid, gid)) = owner.filter(|_| owned) {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|source| CoreError::Io {
                    what: "cannot hand over to the user namespace's root",
                    path: p.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Creates the exec FIFO (0622: a first process in a user namespace may write it).
    pub fn make_fifo(&self) -> Result<PathBuf, CoreError> {
        let path = self.fifo();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let made = nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o622));
        nix::sys::stat::umask(old);
        made.map_err(|e| CoreError::Io {
            what: "cannot create the exec FIFO",
            path: path.clone(),
            source: e.into(),
        })?;
        Ok(path)
    }

    /// Writes a private file (0600) atomically: a temporary file renamed over `name`.
    pub fn write_private(&self, name: &str, bytes: &[u8]) -> Result<(), CoreError> {
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let io = |source| CoreError::Io {
            what: "cannot write",
            path: path.clone(),
            source,
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    }

    /// Saves `state`.
    pub fn save(&self, state: &State) -> Result<(), CoreError> {
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| CoreError::Internal(format!("encoding the state: {e}")))?;
        self.write_private(STATE_FILE, &json)
    }

    /// Loads the state; a file of another version or a broken one is one clear error.
    pub fn load(&self) -> Result<State, CoreError> {
        SandboxDir::load_at(&self.path)
    }

    /// Loads the state of the sandbox directory at `dir`.
    pub fn load_at(dir: &Path) -> Result<State, CoreError> {
        let path = dir.join(STATE_FILE);
        let mut text = String::new();
        fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|source| CoreError::Io {
                what: "cannot read",
                path: path.clone(),
                source,
            })?;
        let bad = |why: String| CoreError::BadState {
            path: path.clone(),
            why,
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(STATE_VERSION)) {
            return Err(bad(format!(
                "state version {} is not {STATE_VERSION}: it was written by another sandbox version; \
                 delete it with that version, or remove the directory by hand",
                version.map_or("missing".into(), |v| v.to_string())
            )));
        }
        serde_json::from_value(value).map_err(|e| bad(e.to_string()))
    }

    /// Keeps the directory when this value is dropped (it now outlives the command).
    pub fn keep(mut self) {
        self.owned = false;
    }

    /// Removes the directory now (unmounting anything left under it), reporting failure.
    pub fn remove(mut self) -> Result<(), CoreError> {
        self.owned = false;
        remove_dir(&self.path)
    }
}

impl Drop for SandboxDir {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = remove_dir(&self.path) {
                // A destructor has no caller to return to; the message names the fix.
                eprintln!("sandbox: {e}");
            }
        }
    }
}

/// Which process holds a sandbox, identified across pid reuse by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat (clock ticks since boot).
    pub start: u64,
}

/// What a process is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Exited, but not reaped by its parent yet.
    Zombie,
    /// Gone (or its pid belongs to another process now).
    Gone,
}

impl Holder {
    /// The holder record of process `pid` now.
    pub fn of(pid: i32) -> Holder {
        Holder {
            pid,
            start: process_start_time(pid).unwrap_or(0),
        }
    }

    /// This process.
    pub fn me() -> Holder {
        Holder::of(std::process::id() as i32)
    }

    pub fn liveness(&self) -> Liveness {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return Liveness::Gone;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return Liveness::Gone;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let start: u64 = fields.nth(18).and_then(|s| s.parse().ok()).unwrap_or(0);
        if self.start != 0 && start != self.start {
            return Liveness::Gone;
        }
        match state {
            "Z" | "X" | "x" => Liveness::Zombie,
            _ => Liveness::Alive,
        }
    }

    pub fn alive(&self) -> bool {
        self.liveness() == Liveness::Alive
    }
}

/// The start time of `pid` (field 22 of /proc/PID/stat, in clock ticks since boot); with the pid
/// it identifies a process even after its pid is reused.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Which backend runs a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Container,
    Vm,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Container => "container",
            Mode::Vm => "vm",
        })
    }
}

/// An OCI container status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn process_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().next().map(|s| s == "T")
        })
        .unwrap_or(false)
}

/// A sandbox's `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub id: String,
    pub mode: Mode,
    /// The process whose life is the sandbox's: the `sandbox run` launcher, or an OCI
    /// container's first process.
    pub holder: Holder,
    /// The workload's first process (the container's PID 1, or the VMM); 0 until it exists.
    pub pid: i32,
    /// The OCI bundle (the directory as given to `--bundle`), or the image name.
    pub bundle: String,
    /// The root filesystem's host path.
    pub rootfs: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The bundle's `ociVersion`.
    pub oci_version: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The cgroup directories, and the ones of them this sandbox created (removed with it).
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    #[serde(default)]
    pub cgroup_created: Vec<PathBuf>,
    /// The host end of its network link, if it has one.
    #[serde(default)]
    pub link: Option<String>,
    /// The hooks still to run after `create` (OCI), with the ones the runtime runs itself.
    #[serde(default)]
    pub hooks: crate::plan::Hooks,
    /// Set once `start` released the workload.
    #[serde(default)]
    pub started: bool,
}

impl State {
    /// The OCI status: stopped once the first process is gone or a zombie (or the holder is
    /// gone), created while the exec FIFO waits, paused when the cgroup is frozen, else running.
    pub fn status(&self, dir: &Path) -> Status {
        if self.pid <= 0 {
            return if self.holder.alive() {
                Status::Creating
            } else {
                Status::Stopped
            };
        }
        let first = Holder::of_recorded(self.pid, self.pid_start());
        if first.liveness() != Liveness::Alive || self.holder.liveness() == Liveness::Gone {
            return Status::Stopped;
        }
        if dir.join(EXEC_FIFO).exists() && !self.started {
            return Status::Created;
        }
        if !self.cgroup_dirs.is_empty()
            && sandbox_container::cgroups::Cgroup::open(&self.cgroup_dirs, &[]).is_frozen()
        {
            return Status::Paused;
        }
        // A VM's holder (the VMM, its vCPU threads with it) is paused by SIGSTOP.
        if self.mode == Mode::Vm && process_stopped(self.pid) {
            return Status::Paused;
        }
        Status::Running
    }

    /// The first process's start time as recorded (the holder's, when it is the holder).
    fn pid_start(&self) -> u64 {
        if self.holder.pid == self.pid {
            self.holder.start
        } else {
            0
        }
    }

    /// The OCI state JSON (`state` command, hooks): ociVersion, id, status, pid, bundle,
    /// annotations — plus runc's rootfs, created and owner.
    pub fn oci(&self, status: Status) -> serde_json::Value {
        let pid = if status == Status::Stopped { 0 } else { self.pid };
        let mut v = serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": pid,
            "status": status.to_string(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
        });
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::to_value(&self.annotations).unwrap_or_default();
        }
        v["owner"] = "".into();
        v
    }
}

impl Holder {
    fn of_recorded(pid: i32, start: u64) -> Holder {
        Holder { pid, start }
    }
}

/// Unmounts (lazily) whatever is mounted under `path`, then removes it.
pub fn remove_dir(path: &Path) -> Result<(), CoreError> {
    for mount in mounts_under(path) {
        // A sandbox's mounts live in its own mount namespace and go with it; one visible here
        // is a leftover, and a lazy detach is what removes it safely.
        nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH).map_err(|e| CoreError::Io {
            what: "cannot unmount",
            path: mount.clone(),
            source: e.into(),
        })?;
    }
    let mut result = fs::remove_dir_all(path);
    if matches!(&result, Err(e) if e.kind() == io::ErrorKind::PermissionDenied) {
        // overlayfs leaves `work/work` with mode 000; without CAP_DAC_OVERRIDE (rootless) even
        // its owner cannot empty it until the mode allows.
        open_up(path);
        result = fs::remove_dir_all(path);
    }
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CoreError::Io {
            what: "cannot remove",
            path: path.to_path_buf(),
            source,
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Holder::me();
        assert_eq!(me.liveness(), Liveness::Alive);
        let reused = Holder {
            pid: me.pid,
            start: me.start + 1,
        };
        assert_eq!(reused.liveness(), Liveness::Gone);
        assert_eq!(Holder::of(i32::MAX).liveness(), Liveness::Gone);
    }

    #[test]
    fn a_zombie_counts_as_exited() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let holder = Holder::of(child.id() as i32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while holder.liveness() == Liveness::Alive && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(holder.liveness(), Liveness::Zombie);
        drop(child);
    }

    #[test]
    fn directories_are_private_and_state_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::at(tmp.path().join("root"));
        let dir = root.create(Some("box-1")).unwrap();
        assert_eq!(
            fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(matches!(
            root.create(Some("box-1")),
            Err(CoreError::Exists { .. })
        ));
        let state = State {
            version: STATE_VERSION,
            id: "box-1".into(),
            mode: Mode::Container,
            holder: Holder::me(),
            pid: 0,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-01T00:00:00Z".into(),
            oci_version: "1.0.2".into(),
            annotations: BTreeMap::new(),
            cgroup_dirs: Vec::new(),
            cgroup_created: Vec::new(),
            link: None,
            hooks: Default::default(),
            started: false,
        };
        dir.save(&state).unwrap();
        let file = dir.path().join(STATE_FILE);
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(root.open("box-1").unwrap().load().unwrap(), state);
        assert_eq!(state.status(dir.path()), Status::Creating);
        fs::write(&file, "{\"version\":99}").unwrap();
        let err = root.open("box-1").unwrap().load().unwrap_err().to_string();
        assert!(err.contains("another sandbox version"), "{err}");
        assert!(matches!(root.open("nope"), Err(CoreError::NotFound { .. })));
        dir.remove().unwrap();
        assert!(root.list().is_empty());
    }
}
