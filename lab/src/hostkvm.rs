//! What kind of KVM this host offers, which decides whether VM mode runs natively or in the lab.
//!
//! Hardware KVM: `/dev/kvm` exists, the CPU flags include `vmx` (Intel VT-x) or `svm` (AMD-V), and
//! the KVM module is not PVM. PVM (`/sys/module/kvm_pvm`) gives a `/dev/kvm` on which stock guest
//! kernels cannot run, so those hosts need the lab.

use std::fmt;
use std::fs;
use std::path::Path;

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
    /// Inspects `/dev/kvm`, `/sys/module/kvm_pvm` and the CPU flags in `/proc/cpuinfo`.
    pub fn detect() -> HostKvm {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::classify(
            Path::new("/dev/kvm").exists(),
            Path::new("/sys/module/kvm_pvm").exists(),
            &cpuinfo,
        )
    }

    /// The decision itself, from the three observations.
    pub fn classify(dev_kvm: bool, kvm_pvm: bool, cpuinfo: &str) -> HostKvm {
        if kvm_pvm {
            return HostKvm::Pvm;
        }
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, f)| f.split_whitespace().collect())
            .unwrap_or_default();
        let extension = if flags.contains(&"vmx") {
            Some("VMX")
        } else if flags.contains(&"svm") {
            Some("SVM")
        } else {
            None
        };
        match (dev_kvm, extension) {
            (true, Some(extension)) => HostKvm::Hardware { extension },
            (false, Some(_)) => HostKvm::Unavailable {
                reason: "/dev/kvm is missing (load kvm_intel or kvm_amd)".into(),
            },
            (_, None) => HostKvm::Unavailable {
                reason: "the CPU exposes neither vmx nor svm (no hardware virtualization)".into(),
            },
        }
    }

    /// Whether VM mode needs the lab on this host.
    pub fn needs_lab(&self) -> bool {
        !matches!(self, HostKvm::Hardware { .. })
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

    const AMD: &str = "processor\t: 0\nflags\t\t: fpu vme svm lm\n";
    const INTEL: &str = "flags\t\t: fpu vmx lm\n";
    const NONE: &str = "flags\t\t: fpu hypervisor lm\n";

    #[test]
    fn classifies_hardware_pvm_and_missing() {
        assert_eq!(
            HostKvm::classify(true, false, AMD),
            HostKvm::Hardware { extension: "SVM" }
        );
        assert_eq!(
            HostKvm::classify(true, false, INTEL),
            HostKvm::Hardware { extension: "VMX" }
        );
        assert_eq!(HostKvm::classify(true, true, AMD), HostKvm::Pvm);
        assert!(HostKvm::classify(true, false, NONE).needs_lab());
        assert!(HostKvm::classify(false, false, INTEL).needs_lab());
        assert!(!HostKvm::classify(true, false, INTEL).needs_lab());
    }
}
