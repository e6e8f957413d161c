//! Where the numbers come from: CPU, host kernel, KVM kind, cgroup layout, peer versions, and
//! whether the bench runs natively or inside the lab's L1 (KVM nested under QEMU TCG).

use crate::config::Peer;
use sandbox_vmm::kvm_kind::{self, KvmKind};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;

/// The file the lab hands L1 its run script through (present only inside the lab's L1).
pub const LAB_MARKER: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/sandbox/run";

/// Where a figure was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    /// On the host, whose KVM is hardware virtualisation.
    Native,
    /// On the host, whose KVM is PVM (VM mode cannot run; container figures are native).
    NativePvm,
    /// On a host without a usable KVM.
    NativeNoKvm,
    /// Inside the lab: L1 Linux under QEMU TCG, `kvm_amd` nested under TCG. Every figure is
    /// emulated; only ratios within the run mean something.
    LabTcg,
}

impl Place {
    /// How the report names it next to each figure.
    pub fn describe(self) -> &'static str {
        match self {
            Place::Native => "native (hardware KVM)",
            Place::NativePvm => "native (host KVM is PVM)",
            Place::NativeNoKvm => "native (no usable KVM)",
            Place::LabTcg => "lab (L1 under QEMU TCG, nested kvm_amd)",
        }
    }

    /// Whether VM mode (and the QEMU peer) can boot stock guest kernels here.
    pub fn can_boot_vms(self) -> bool {
        matches!(self, Place::Native | Place::LabTcg)
    }
}

/// The versions of one peer, or why it is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer: Peer,
    /// The first line of `--version`, when installed.
    pub version: Option<String>,
    /// How to install it, when it is not.
    pub install_hint: Option<String>,
}

/// The environment section every report opens with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub place: Place,
    pub place_description: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_total_mib: u64,
    pub host_kernel: String,
    pub kvm_kind: String,
    pub cgroup_layout: String,
    pub sandbox_version: String,
    /// The guest kernel VM mode and the QEMU peer boot (its cache key), if built.
    pub guest_kernel: Option<String>,
    pub peers: Vec<PeerInfo>,
    /// Seconds since the Unix epoch when the bench started.
    pub started_unix: u64,
}

impl Environment {
    /// Reads this machine's environment.
    pub fn detect(peers: &[Peer]) -> Environment {
        let kind = kvm_kind::detect();
        let place = if Path::new(LAB_MARKER).exists() {
            Place::LabTcg
        } else {
            match kind {
                KvmKind::Hardware { .. } => Place::Native,
                KvmKind::Pvm => Place::NativePvm,
                _ => Place::NativeNoKvm,
            }
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Environment {
            place,
            place_description: place.describe().to_string(),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_total_mib: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) / 1024,
            host_kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            kvm_kind: describe_kvm(kind, place),
            cgroup_layout: format!("{:?}", sandbox_container::cgroups::layout()).to_lowercase(),
            sandbox_version: env!("CARGO_PKG_VERSION").to_string(),
            guest_kernel: sandbox_kernel::cached().map(|k| k.key),
            peers: peers.iter().map(|&p| peer_info(p)).collect(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// The version of `peer`, if it is installed.
    pub fn peer_version(&self, peer: Peer) -> Option<&str> {
        self.peers.iter().find(|p| p.peer == peer)?.version.as_deref()
    }
}

fn describe_kvm(kind: KvmKind, place: Place) -> String {
    let base = match kind {
        KvmKind::Absent => "none (/dev/kvm missing)".to_string(),
        KvmKind::NoPermission => "present, not openable by this user".to_string(),
        KvmKind::Hardware { vendor } => format!("hardware ({vendor:?})").to_lowercase(),
        KvmKind::Pvm => "PVM (kvm_pvm)".to_string(),
        KvmKind::Unknown => "unknown".to_string(),
    };
    if place == Place::LabTcg {
        format!("{base}, nested under QEMU TCG (lab L1)")
    } else {
        base
    }
}

/// The value of the first `key : value` line of /proc/cpuinfo.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// A `/proc/meminfo` figure in KiB.
pub(crate) fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The program a peer runs as: a command on PATH, or for `sandbox-runtime` the binary next to
/// the running one (the `sandbox` CLI's sibling, also in the lab's L1).
pub fn peer_program(peer: Peer) -> String {
    match peer {
        Peer::SandboxRuntime => std::env::current_exe()
            .ok()
            .and_then(|exe| {
                let dir = exe.parent()?.to_path_buf();
                [dir.join("sandbox-runtime"), dir.parent()?.join("sandbox-runtime")]
                    .into_iter()
                    .find(|p| p.is_file())
            })
            .map_or_else(|| "sandbox-runtime".to_string(), |p| p.display().to_string()),
        Peer::Crun => "crun".into(),
        Peer::Runc => "runc".into(),
        Peer::Runsc => "runsc".into(),
        Peer::QemuMicrovm | Peer::QemuMicrovmDefault => "qemu-system-x86_64".into(),
    }
}

fn peer_info(peer: Peer) -> PeerInfo {
    let version = Command::new(peer_program(peer))
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        });
    let install_hint = version.is_none().then(|| {
        let package = match peer {
            Peer::SandboxRuntime => {
                return "sandbox-runtime is not built next to sandbox: run `cargo build --workspace`"
                    .to_string()
            }
            Peer::Crun => "crun",
            Peer::Runc => "runc",
            Peer::Runsc => "runsc",
            Peer::QemuMicrovm | Peer::QemuMicrovmDefault => "qemu-system-x86",
        };
        format!(
            "{} is not installed: run `apt-get install {package}` (in the lab, also pass `--tool {}`)",
            peer_program(peer),
            peer_program(peer)
        )
    });
    PeerInfo {
        peer,
        version,
        install_hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_and_meminfo_fields() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu svm\n";
        assert_eq!(field(cpuinfo, "model name").as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(field(cpuinfo, "bogomips"), None);
        let meminfo = "MemTotal:        8000000 kB\nMemAvailable:    4000000 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemAvailable"), Some(4_000_000));
        assert_eq!(meminfo_kib(meminfo, "Mem"), None);
    }

    #[test]
    fn this_host_is_described() {
        let env = Environment::detect(&[Peer::Runc]);
        assert!(!env.host_kernel.is_empty());
        assert_eq!(env.peers.len(), 1);
        let p = &env.peers[0];
        assert!(p.version.is_some() != p.install_hint.is_some());
    }
}
