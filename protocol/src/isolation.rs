//! The parts of a [`Plan`](crate::Plan) that describe how the sandbox is shut off from the host
//! and limited: the process's identity and privileges ([`ProcessPlan`]), the namespaces, mounts,
//! devices, seccomp profile and protected paths ([`Isolation`]), and the cgroup limits
//! ([`ResourcePlan`]).
//!
//! They mirror the OCI runtime spec's `process` and `linux` objects, so an OCI bundle's
//! `config.json` maps onto them field by field, and `sandbox run`'s flags fill the same fields
//! with Docker's defaults. The container launcher applies them on the host; a VM's guest
//! program applies the process part inside the guest. Every field defaults to "not set", so a
//! Plan written before these existed still reads.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the workload process is, beyond its command, environment, directory and user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessPlan {
    /// Supplementary groups (`setgroups`); empty leaves only the primary group.
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    /// Resource limits set before `execve`, in this order.
    pub rlimits: Vec<Rlimit>,
    /// The capability sets; `None` is Docker's default set in every set but ambient.
    pub capabilities: Option<CapabilitySets>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    /// Give the process a pseudo-terminal as its stdio and controlling terminal.
    pub terminal: bool,
    /// The terminal's size as (rows, columns), when `terminal`.
    pub console_size: Option<(u16, u16)>,
}

/// One `setrlimit`: the OCI name (`RLIMIT_NOFILE`) and the soft and hard values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// The five capability sets, by OCI name (`CAP_CHOWN`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CapabilitySets {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
    pub permitted: Vec<String>,
    pub ambient: Vec<String>,
}

/// A namespace kind, by the OCI name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    Pid,
    Network,
    Mount,
    Ipc,
    Uts,
    User,
    Cgroup,
    Time,
}

impl NamespaceKind {
    /// Its name under `/proc/PID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Pid => "pid",
            NamespaceKind::Network => "net",
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::User => "user",
            NamespaceKind::Cgroup => "cgroup",
            NamespaceKind::Time => "time",
        }
    }
}

/// A namespace the sandbox gets: a new one, or the existing one at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub kind: NamespaceKind,
    #[serde(default)]
    pub path: Option<String>,
}

/// A user-namespace id mapping (`/proc/PID/uid_map` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// One mount, as the OCI spec's `mounts` entries: made in list order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// Absolute path inside the sandbox.
    pub destination: String,
    /// The filesystem type; empty for a bind mount (`bind`/`rbind` in `options`).
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub options: Vec<String>,
}

impl MountPlan {
    /// A mount of filesystem `kind` (its source named like the type) with `options`.
    pub fn filesystem(kind: &str, destination: &str, options: &[&str]) -> MountPlan {
        MountPlan {
            destination: destination.to_string(),
            kind: kind.to_string(),
            source: kind.to_string(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    /// Whether this is a bind mount (by type or by option).
    pub fn is_bind(&self) -> bool {
        self.kind == "bind" || self.options.iter().any(|o| o == "bind" || o == "rbind")
    }
}

/// A device node created in the sandbox's `/dev` (OCI `linux.devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePlan {
    pub path: String,
    /// `c` (or `u`), `b` or `p`.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub file_mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// One device-cgroup rule (OCI `linux.resources.devices`), applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    /// `a`, `c` or `b`.
    pub kind: char,
    /// `None`: any (`*`).
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Some of `rwm`.
    pub access: String,
}

/// A seccomp profile in the OCI spec's shape (`linux.seccomp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompProfile {
    /// `SCMP_ACT_ERRNO`, `SCMP_ACT_ALLOW`, ...
    pub default_action: String,
    #[serde(default)]
    pub default_errno: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub syscalls: Vec<SeccompRulePlan>,
}

/// A group of syscalls with one action, and optional argument conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompRulePlan {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub errno: Option<u32>,
    #[serde(default)]
    pub args: Vec<SeccompArg>,
}

/// A condition on one syscall argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompArg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    /// `SCMP_CMP_EQ`, `SCMP_CMP_MASKED_EQ`, ...
    pub op: String,
}

/// How the sandbox is shut off from the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Isolation {
    /// The namespaces, new or joined; the launcher adds none of its own.
    pub namespaces: Vec<Namespace>,
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
    /// Mounts in order, after the root filesystem.
    pub mounts: Vec<MountPlan>,
    /// Paths hidden from the sandbox (an empty read-only tmpfs or /dev/null over them).
    pub masked_paths: Vec<String>,
    /// Paths made read-only.
    pub readonly_paths: Vec<String>,
    /// Device nodes beyond the standard ones.
    pub devices: Vec<DevicePlan>,
    /// `sysctl` keys (dotted) and values, written from inside the sandbox's namespaces.
    pub sysctl: BTreeMap<String, String>,
    /// `None`: no filter (an OCI bundle without `linux.seccomp`); `sandbox run` puts the
    /// launcher's default allowlist here.
    pub seccomp: Option<SeccompProfile>,
    /// `shared`, `slave`, `private`, `unbindable` (optionally with an `r` prefix) for `/`.
    pub rootfs_propagation: Option<String>,
    pub readonly_root: bool,
}

/// The cgroup limits, as the OCI spec's `linux.resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourcePlan {
    pub memory: MemoryLimits,
    pub cpu: CpuLimits,
    pub pids: Option<i64>,
    /// Device rules in order; the launcher puts its own default rules after them.
    pub devices: Vec<DeviceRule>,
    pub block_io: BlockIoLimits,
    /// Hugepage limits: page size (`2MB`) and bytes.
    pub hugepages: Vec<(String, u64)>,
    pub network: NetworkLimits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryLimits {
    pub limit: Option<i64>,
    pub reservation: Option<i64>,
    pub swap: Option<i64>,
    pub kernel: Option<i64>,
    pub kernel_tcp: Option<i64>,
    pub swappiness: Option<u64>,
    pub disable_oom_killer: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuLimits {
    pub shares: Option<u64>,
    pub quota: Option<i64>,
    pub period: Option<u64>,
    pub realtime_runtime: Option<i64>,
    pub realtime_period: Option<u64>,
    pub cpus: Option<String>,
    pub mems: Option<String>,
}

impl CpuLimits {
    /// The limit as a number of CPUs (quota / period), when a quota is set.
    pub fn as_cpus(&self) -> Option<f64> {
        let quota = self.quota.filter(|q| *q > 0)?;
        let period = self.period.unwrap_or(100_000).max(1);
        Some(quota as f64 / period as f64)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlockIoLimits {
    pub weight: Option<u16>,
    pub leaf_weight: Option<u16>,
    /// `(major, minor, weight, leaf weight)`.
    pub weight_devices: Vec<(i64, i64, Option<u16>, Option<u16>)>,
    /// `(file name, major, minor, rate)`: `blkio.throttle.read_bps_device` and the others.
    pub throttle: Vec<(String, i64, i64, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkLimits {
    pub class_id: Option<u32>,
    /// `(interface, priority)`.
    pub priorities: Vec<(String, u32)>,
}

impl ResourcePlan {
    /// Whether any limit is set (a rootless sandbox can set none).
    pub fn any(&self) -> bool {
        *self != ResourcePlan::default()
    }
}

/// What a VM's init applies to an OCI bundle's processes inside the guest, settled on the host
/// (names resolved, the seccomp profile compiled), so the guest program only makes the calls:
/// the guest kernel then enforces them as the host's does for a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestConfinement {
    /// Namespaces each process gets of its own (`unshare` before exec): mount, uts, ipc,
    /// network and cgroup. (A PID namespace would need a process between init and the
    /// workload; the VM is its PID boundary.)
    pub namespaces: Vec<NamespaceKind>,
    /// Capability masks by number: bounding, effective, permitted, inheritable, ambient.
    pub capabilities: Option<[u64; 5]>,
    /// Set `no_new_privs` before exec.
    pub no_new_privileges: bool,
    /// Seccomp BPF programs, installed in order last before exec; each instruction as
    /// `code | jt << 16 | jf << 24 | k << 32`.
    pub seccomp: Vec<Vec<u64>>,
}
