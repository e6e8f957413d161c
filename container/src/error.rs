//! [`ContainerError`]: everything that can stop a container from starting, each with the fix.

use std::path::PathBuf;

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
    #[error("cannot prepare the run directory {path}: {source}; check that $SANDBOX_HOME is writable")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup: {0}")]
    Cgroup(String),
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
}

impl ContainerError {
    /// A failed kernel call in the launcher, with what it was trying to do.
    pub fn sys(what: impl Into<String>, source: nix::Error) -> ContainerError {
        ContainerError::Sys {
            what: what.into(),
            source,
        }
    }

    /// The exit status the CLI should use for this error (127 for a missing command, as a shell
    /// would; 125 for everything else, like `docker run`).
    pub fn exit_status(&self) -> i32 {
        match self {
            ContainerError::CommandNotFound { .. } => sandbox_protocol::EXIT_NOT_FOUND,
            _ => 125,
        }
    }
}
