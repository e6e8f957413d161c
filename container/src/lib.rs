//! The namespace container launcher: the mechanisms behind container mode, for `sandbox run`
//! and the OCI runtime alike. The runtime core (`sandbox-core`) decides what a sandbox is — its
//! [`Plan`](sandbox_protocol::Plan), id, directories and network addresses — and drives the
//! lifecycle; this crate makes it real on the host:
//!
//! - [`launch`]: the launcher's steps — [`prepare`] (every check, before anything exists),
//!   [`Prepared::spawn`] (cgroup, `clone` into the namespaces, id maps), [`Spawned::go`] (the first process sets itself up to "created"),
//!   [`Spawned::start`], [`Spawned::wait`], or [`Spawned::detach`] for an OCI `create`;
//! - [`child`](crate) (private): the first process's steps from `clone` to `execve`;
//! - [`exec`]: another process into a running container (its namespaces and cgroup);
//! - the pieces each step uses: [`namespaces`], [`rootfs`], [`mounts`], [`devices`],
//!   [`protect`], [`terminal`], [`caps`], [`identity`], [`rlimits`], [`seccomp`], [`hooks`],
//!   [`userns_overlay`] (the root of a `--userns` container, mounted from descriptors),
//!   [`cgroups`] (v1, v2 and hybrid, with the device allowlist) and [`net`] (the veth pair).
//!
//! Host state and its owners: the cgroup ([`cgroups::Cgroup`]), the veth pair
//! ([`net::HostLink`]) and the first process ([`process::ChildProcess`]) each remove
//! themselves when dropped, so every early return cleans up; mounts live only in the
//! container's own mount namespace.

pub mod caps;
pub mod cgroups;
mod child;
pub mod devices;
mod error;
pub mod exec;
pub mod hooks;
pub mod id;
pub mod identity;
pub mod launch;
pub mod mounts;
pub mod namespaces;
pub mod net;
pub mod process;
pub mod protect;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod secure_path;
mod sys;
pub mod terminal;
pub mod userns_overlay;

pub use child::Go;
pub use error::ContainerError;
pub use launch::{
    prepare, start_fifo, ContainerHooks, Detached, Entry, Exited, Launch, Prepared, Spawned, Start,
};
pub use rootfs::{OverlayDirs, RootSource};
