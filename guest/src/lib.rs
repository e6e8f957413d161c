//! Everything that runs inside a sandbox, identical in both modes, and the host-side builders of
//! what it runs on.
//!
//! Inside (the static `sandbox-guest` binary): [`init`] (PID 1) and [`workloads`].
//! Shared by host and guest: [`protocol`].
//! Host side: [`image`] (OCI image store), [`kernel`] (guest kernel build), [`disk`] (ext4 root
//! disks), [`paths`] (where state and caches live).

pub mod paths;
pub mod protocol;
