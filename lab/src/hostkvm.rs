//! What kind of KVM this host offers, which decides whether VM mode runs natively or in the lab.
//!
//! The detection itself is the VMM's ([`sandbox_vmm::kvm_kind`]: `/dev/kvm` opened, the
//! `kvm_pvm` module, the vmx/svm CPU flags), so the lab and `run --mode vm` never disagree about a
//! host; this type only says what it means for the lab. Hardware KVM runs natively; PVM (a
//! `/dev/kvm` on which stock guest kernels cannot run), a missing or unopenable `/dev/kvm`, or one
//! no CPU flag explains need the lab.

use std::fmt;

use sandbox_vmm::kvm_kind::{self, KvmKind, Vendor};

/// The host's KVM, as far as VM mode is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKvm {
    /// Hardware-assisted KVM; `extension` is `VMX` (Intel) or `SVM` (AMD).
    Hardware { extension: &'static str },
    /// PVM: a paravirtualized KVM on which stock guest kernels cannot run.
    Pvm,
    /// No usable KVM; the reason says what is missing.
    Unavailable { reason: String },
}

impl HostKvm {
    /// Inspects this host through [`kvm_kind::detect`].
    pub fn detect() -> HostKvm {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_kind(kvm_kind::detect(), kvm_kind::cpu_vendor(&cpuinfo))
    }

    /// What a detected kind means for the lab (`cpu` is the CPU's own extension, if any, for
    /// a host whose `/dev/kvm` is missing).
    pub fn from_kind(kind: KvmKind, cpu: Option<Vendor>) -> HostKvm {
        let unavailable = |reason: &str| HostKvm::Unavailable {
            reason: reason.to_string(),
        };
        match kind {
            KvmKind::Hardware { vendor } => HostKvm::Hardware {
                extension: extension(vendor),
            },
            KvmKind::Pvm => HostKvm::Pvm,
            KvmKind::Absent if cpu.is_some() => {
                unavailable("/dev/kvm is missing (load kvm_intel or kvm_amd)")
            }
            KvmKind::Absent => {
                unavailable("the CPU exposes neither vmx nor svm (no hardware virtualization)")
            }
            KvmKind::NoPermission => unavailable(
                "/dev/kvm cannot be opened by this user (add it to the kvm group, or run as root)",
            ),
            KvmKind::Unknown => unavailable(
                "/dev/kvm opens but the CPU exposes neither vmx nor svm (no hardware virtualization)",
            ),
        }
    }

    /// Whether VM mode needs the lab on this host.
    pub fn needs_lab(&self) -> bool {
        !matches!(self, HostKvm::Hardware { .. })
    }
}

fn extension(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Vmx => "VMX",
        Vendor::Svm => "SVM",
    }
}

impl fmt::Display for HostKvm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKvm::Hardware { extension } => write!(f, "hardware KVM ({extension})"),
            HostKvm::Pvm => write!(
                f,
                "PVM KVM (kvm_pvm): stock guest kernels cannot run; use `sandbox lab -- run --mode vm ...`"
            ),
            HostKvm::Unavailable { reason } => {
                write!(
                    f,
                    "no usable KVM: {reason}; use `sandbox lab -- run --mode vm ...`"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_runs_natively_everything_else_needs_the_lab() {
        assert_eq!(
            HostKvm::from_kind(KvmKind::Hardware { vendor: Vendor::Svm }, Some(Vendor::Svm)),
            HostKvm::Hardware { extension: "SVM" }
        );
        assert_eq!(
            HostKvm::from_kind(KvmKind::Hardware { vendor: Vendor::Vmx }, Some(Vendor::Vmx)),
            HostKvm::Hardware { extension: "VMX" }
        );
        assert_eq!(HostKvm::from_kind(KvmKind::Pvm, None), HostKvm::Pvm);
        for kind in [
            KvmKind::Absent,
            KvmKind::NoPermission,
            KvmKind::Unknown,
            KvmKind::Pvm,
        ] {
            assert!(
                HostKvm::from_kind(kind, Some(Vendor::Vmx)).needs_lab(),
                "{kind:?}"
            );
        }
        let missing = HostKvm::from_kind(KvmKind::Absent, Some(Vendor::Vmx)).to_string();
        assert!(missing.contains("load kvm_intel or kvm_amd"), "{missing}");
        let none = HostKvm::from_kind(KvmKind::Absent, None).to_string();
        assert!(none.contains("neither vmx nor svm"), "{none}");
    }

    #[test]
    fn detection_agrees_with_the_vmm() {
        let host = HostKvm::detect();
        let vmm_hardware = matches!(kvm_kind::detect(), KvmKind::Hardware { .. });
        assert_eq!(host.needs_lab(), !vmm_hardware, "{host}");
    }
}
