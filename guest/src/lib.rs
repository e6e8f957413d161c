//! What runs inside a sandbox, identical in both modes: the static `sandbox-guest` program
//! ([`init`] as PID 1, and the [`workloads`]). What host and guest share — the Plan, the
//! ready/exit contract, paths — is the `sandbox-protocol` crate. The host-side builders of what
//! it runs on live beside this crate: `image/` (OCI image store), `kernel/` (guest kernel),
//! `disk/` (ext4 root disks).

pub mod hold_kvm;
pub mod init;
pub mod workloads;
