//! The one error type of the spec crate: every variant names the bad input and the remedy.

/// A flag value `sandbox run` cannot accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("bad size {input:?}: {why}; write a number with an optional unit, e.g. 512M, 1G, 64MiB")]
    Size { input: String, why: String },
    #[error("bad CPU count {input:?}: expected a positive number such as 0.5 or 2")]
    Cpus { input: String },
    #[error(
        "bad pids limit {input:?}: expected a whole number of at least 2 (init and the command \
         are two processes already), e.g. --pids 64"
    )]
    Pids { input: String },
    #[error("the command is an empty string: name a program after --, e.g. -- sh -c 'echo hi'")]
    EmptyCommand,
    #[error("bad --net {input:?}: expected `none` (loopback only) or `host` (a veth pair to the host)")]
    Net { input: String },
    #[error("bad --volume {input:?}: {why}; write HOST_DIR:PATH or HOST_DIR:PATH:ro")]
    Volume { input: String, why: String },
    #[error("volume source {path:?} does not exist: create it first, or fix the path in --volume")]
    VolumeSourceMissing { path: String },
    #[error("bad --env {input:?}: expected KEY=VALUE with a non-empty KEY without `=`")]
    Env { input: String },
    #[error("bad --user {input:?}: expected UID or UID:GID as numbers, e.g. --user 1000:1000")]
    User { input: String },
    #[error("bad --hostname {input:?}: {why}")]
    Hostname { input: String, why: String },
    #[error("bad --workdir {input:?}: it must be an absolute path inside the sandbox, e.g. /tmp")]
    Workdir { input: String },
    #[error(
        "bad --userns {input:?}: {why}; give the host uid of the container's root, e.g. \
         --userns=1000000, or --userns alone for the `sandbox` line of /etc/subuid (else 1000000)"
    )]
    Userns { input: String, why: String },
    #[error(
        "--userns: {file}: {why}; fix the line (`sandbox:START:65536`), or give the base with \
         --userns=BASE"
    )]
    SubId { file: String, why: String },
}
