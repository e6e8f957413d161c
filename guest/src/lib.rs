//! What runs inside a sandbox, identical in both modes: the static `sandbox-guest` program
//! ([`init`] as PID 1, and the [`workloads`]), plus what host and guest share: the [`protocol`]
//! and the host-side [`paths`]. The host-side builders of what it runs on live beside this crate:
//! `image/` (OCI image store), `kernel/` (guest kernel), `disk/` (ext4 root disks).

pub mod hold_kvm;
pub mod init;
pub mod paths;
pub mod protocol;
pub mod workloads;
