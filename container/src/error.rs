//! [`ContainerError`]: everything that can stop a container from starting, each with the fix.

/// Why a container could not be run. Every message names what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(
        "running as uid {uid} needs user namespaces, and this host has them disabled ({why}): \
         run as root, or enable them with `sysctl -w user.max_user_namespaces=15000` \
         (and `kernel.unprivileged_userns_clone=1` where that exists)"
    )]
    NoUserNamespaces { uid: u32, why: String },
    #[error(
        "{what} needs root: as uid {uid} the container runs in a user namespace without \
         {why}; run `sandbox` as root, or drop {what}"
    )]
    RootlessUnsupported { what: String, uid: u32, why: String },
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("{0}")]
    Namespace(String),
    #[error("{0}")]
    Config(String),
    #[error("hook: {0}")]
    Hook(String),
    #[error("network: {0}")]
    Net(String),
    #[error("cannot build the seccomp filter: {0}")]
    Seccomp(String),
    #[error("{what} failed: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("setting up the container failed: {0}")]
    Child(String),
    /// An exec'd process could not be started: `exit` is 127 (not found) or 126.
    #[error("{message}")]
    ExecFailed { message: String, exit: i32 },
}

impl ContainerError {
    /// A failed kernel call in the launcher, with what it was trying to do.
    pub fn sys(what: impl Into<String>, source: nix::Error) -> ContainerError {
        ContainerError::Sys {
            what: what.into(),
            source,
        }
    }

    /// The exit status the CLI should use for this error: an exec'd program's 127 or 126 (as a
    /// shell's), else 125 (like `docker run`).
    pub fn exit_status(&self) -> i32 {
        match self {
            ContainerError::ExecFailed { exit, .. } => *exit,
            _ => 125,
        }
    }
}
