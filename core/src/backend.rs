//! The lifecycle both backends implement, and the names of its steps.
//!
//! A sandbox is **created** (everything set up; its workload exists but waits), **started**
//! (the workload runs), **waited** for (by the process that created it, `sandbox run`), and
//! **deleted** (every host object removed). In between it can be signalled (**kill**), and a
//! backend may offer **pause**/**resume** and **stats**. The runtime core drives these calls
//! the same way for `sandbox run` (one process: create, start, wait, delete) and for the OCI
//! runtime (one command each, the sandbox's state directory carrying what the next command
//! needs); container mode and VM mode are the two implementations.

use crate::error::CoreError;
use crate::plan::Assembled;
use crate::state::{Mode, Root, SandboxDir, State};
use sandbox_spec::{NetMode, Outcome};
use std::path::PathBuf;

/// Whether the creating process stays with the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// `sandbox run`: the launcher starts, waits for and deletes the sandbox itself.
    Attached {
        /// The workload reads the launcher's stdin (`-i`); else `/dev/null`.
        keep_stdin: bool,
    },
    /// The OCI runtime: `create` returns, later commands find the sandbox by its state.
    Detached {
        /// `--console-socket`: where a terminal's master end goes.
        console_socket: Option<PathBuf>,
        /// `--preserve-fds N`: descriptors 3..3+N the workload inherits.
        preserve_fds: u32,
    },
}

/// Everything `check` and `create` need.
#[derive(Debug)]
pub struct CreateRequest<'a> {
    pub assembled: &'a Assembled,
    /// Where the sandbox's directory goes, and its id.
    pub root: &'a Root,
    pub id: &'a str,
    pub holding: Holding,
    pub net: NetMode,
    /// The launcher's start (a `now_ns` reading), the zero of the timings.
    pub started_ns: u64,
}

impl CreateRequest<'_> {
    /// The sandbox's directory path (before it exists).
    pub fn dir_path(&self) -> PathBuf {
        self.root.path().join(self.id)
    }
}

/// What `create` made, for the state file.
#[derive(Debug, Clone, Default)]
pub struct Created {
    /// The workload's first process (or the VMM).
    pub pid: i32,
    pub rootfs: String,
    pub cgroup_dirs: Vec<PathBuf>,
    pub cgroup_created: Vec<PathBuf>,
    pub link: Option<String>,
}

/// Figures of a running sandbox (OCI `events --stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub memory_usage_bytes: Option<u64>,
    pub memory_max_usage_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_ns: Option<u64>,
    pub cpu_throttled_periods: Option<u64>,
    pub cpu_throttled_ns: Option<u64>,
    pub cpu_periods: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_limit: Option<u64>,
}

/// A backend: container mode or VM mode.
pub trait Backend {
    fn mode(&self) -> Mode;

    /// Refuses what can be refused, and prepares what needs no sandbox directory, before
    /// anything of this sandbox exists on the host.
    fn check(&mut self, request: &CreateRequest) -> Result<(), CoreError>;

    /// Sets the sandbox up in `dir` (just created, with its first state) to the point where its
    /// workload waits for start.
    fn create(&mut self, request: &CreateRequest, dir: &SandboxDir) -> Result<Created, CoreError>;

    /// The sandbox's terminal, for the launcher to relay its own to (`sandbox run -t`); called
    /// after `create` when the Plan asks for a terminal.
    fn terminal(&mut self, _keep_stdin: bool) -> Result<Option<crate::terminal::Ends>, CoreError> {
        Ok(None)
    }

    /// Releases the workload.
    fn start(&mut self, dir: &SandboxDir, state: &State) -> Result<(), CoreError>;

    /// Waits for the workload to end (only the creating process can, for an attached sandbox).
    fn wait(&mut self, state: &State) -> Result<Outcome, CoreError>;

    /// Sends `signal` to the workload's first process, or with `all` to all its processes.
    fn kill(&self, state: &State, signal: i32, all: bool) -> Result<(), CoreError>;

    /// Removes every host object of a sandbox whose workload has ended (killing what is left).
    fn delete(&mut self, dir: SandboxDir, state: &State) -> Result<(), CoreError>;

    /// Stops every process of the sandbox where it is.
    fn pause(&self, _state: &State) -> Result<(), CoreError> {
        Err(self.unsupported("pause"))
    }

    /// Lets a paused sandbox go on.
    fn resume(&self, _state: &State) -> Result<(), CoreError> {
        Err(self.unsupported("resume"))
    }

    /// The sandbox's figures now.
    fn stats(&self, _state: &State) -> Result<Stats, CoreError> {
        Err(self.unsupported("stats"))
    }

    /// The sandbox's processes (host pids).
    fn pids(&self, _state: &State) -> Result<Vec<i32>, CoreError> {
        Err(self.unsupported("ps"))
    }

    /// The error for an operation this backend lacks.
    fn unsupported(&self, what: &str) -> CoreError {
        CoreError::Unsupported {
            what: what.to_string(),
            mode: self.mode(),
            remedy: "run the sandbox in the other mode".into(),
        }
    }
}
