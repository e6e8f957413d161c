//! [`CoreError`]: everything the runtime core can refuse or fail at, each naming the input and
//! the fix, with the exit status a CLI should use.

use std::path::PathBuf;

/// Why a sandbox could not be created, found or changed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("invalid sandbox id {id:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '-'")]
    BadId { id: String },
    #[error("a sandbox with id {id:?} already exists: pick another id, or delete it first")]
    Exists { id: String },
    #[error("sandbox {id:?} does not exist: `sandbox-runtime list` shows the ones that do")]
    NotFound { id: String },
    #[error("sandbox {id:?} is {status}: {what}")]
    WrongStatus {
        id: String,
        status: crate::state::Status,
        what: String,
    },
    #[error("state file {}: {why}", .path.display())]
    BadState { path: PathBuf, why: String },
    #[error("{0}")]
    Bundle(String),
    #[error("the image {image:?} has no layers: re-import it with `sandbox image import`")]
    EmptyImage { image: String },
    #[error(
        "the image {image:?} has no {path}: it was not built for sandbox; rebuild the default \
         image with `sandbox image rm default` and run again"
    )]
    NoGuestProgram { image: String, path: String },
    #[error(
        "command {command:?} not found in image {image:?} (searched {searched}): install it in \
         the image, or give its full path"
    )]
    CommandNotFound {
        command: String,
        image: String,
        searched: String,
    },
    #[error(
        "command {command:?} is a directory in image {image:?} ({path}): name a program, e.g. \
         -- ls {path}"
    )]
    CommandIsDirectory {
        command: String,
        image: String,
        path: String,
    },
    #[error(
        "--memory {given} is too small for a container: its set-up, init and the command are \
         charged to it; give at least {least}"
    )]
    MemoryTooSmall { given: String, least: String },
    #[error("{what} {value} is more than this host has ({host}): {remedy}")]
    AboveHost {
        what: &'static str,
        value: String,
        host: String,
        remedy: &'static str,
    },
    #[error("{0}")]
    Spec(#[from] sandbox_spec::SpecError),
    #[error(transparent)]
    Container(#[from] sandbox_container::ContainerError),
    #[error(transparent)]
    Vm(Box<crate::vm::VmError>),
    #[error("image {image:?}: {source}")]
    Image {
        image: String,
        #[source]
        source: sandbox_image::ImageError,
    },
    #[error("network: {0}")]
    Net(#[from] sandbox_container::net::NetError),
    #[error(
        "no free /30 left in {block}: every one overlaps a host address or route; remove stale \
         sandbox links with `sandbox gc`"
    )]
    NoFreeSubnet { block: String },
    #[error(
        "--userns needs root: as uid {uid} the container runs in a user namespace already, its \
         root mapped to uid {uid}, and only root may map a range of other ids; drop --userns, or \
         run `sandbox` as root"
    )]
    UsernsNeedsRoot { uid: u32 },
    #[error("{what} is not supported by {mode} mode: {remedy}")]
    Unsupported {
        what: String,
        mode: crate::state::Mode,
        remedy: String,
    },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The launcher's terminal could not be relayed (`sandbox run -t`).
    #[error("the terminal: {what}: {errno}")]
    Terminal {
        what: &'static str,
        errno: nix::errno::Errno,
    },
    /// The guest agent of a VM could not be reached or failed (`sandbox exec`, the OCI runtime's
    /// VM mode).
    #[error(transparent)]
    Agent(#[from] crate::vm::agent::AgentError),
    #[error("internal error (a bug in sandbox): {0}")]
    Internal(String),
}

impl CoreError {
    /// The exit status a CLI should use: 127 for a command the image lacks (as a shell would),
    /// 128+N when a signal stopped the launch, 125 for everything else (like `docker run`).
    pub fn exit_status(&self) -> i32 {
        match self {
            CoreError::CommandNotFound { .. } => sandbox_protocol::EXIT_NOT_FOUND,
            CoreError::CommandIsDirectory { .. } => sandbox_protocol::EXIT_NOT_EXECUTABLE,
            CoreError::Container(e) => e.exit_status(),
            CoreError::Vm(e) => e.exit_status(),
            CoreError::Agent(e) => e.exit_status().unwrap_or(125),
            _ => 125,
        }
    }
}

impl From<crate::vm::VmError> for CoreError {
    fn from(e: crate::vm::VmError) -> CoreError {
        CoreError::Vm(Box::new(e))
    }
}
