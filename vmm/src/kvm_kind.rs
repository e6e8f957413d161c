//! What kind of KVM this host offers: none, one we may not open, hardware virtualisation (Intel
//! VMX or AMD SVM), or PVM (KVM on a paravirtualised host, which cannot boot stock guest kernels).
//! Used by `sandbox doctor` and by the VMM before it tries to boot.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The CPU vendor extension behind hardware KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Intel VT-x (`vmx` in /proc/cpuinfo).
    Vmx,
    /// AMD-V (`svm` in /proc/cpuinfo).
    Svm,
}

/// What `/dev/kvm` is on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    /// No `/dev/kvm`.
    Absent,
    /// `/dev/kvm` exists but this user cannot open it.
    NoPermission,
    /// KVM backed by the CPU's virtualisation extension.
    Hardware { vendor: Vendor },
    /// KVM provided by the `kvm_pvm` module: guests run paravirtualised, stock kernels cannot boot.
    Pvm,
    /// `/dev/kvm` opens, but neither PVM nor a vmx/svm CPU flag explains it.
    Unknown,
}

/// Where detection looks; the real host is [`Roots::host`], tests use fake trees.
#[derive(Debug, Clone)]
pub struct Roots {
    /// The KVM device node (normally `/dev/kvm`).
    pub dev_kvm: PathBuf,
    /// The sysfs mount (normally `/sys`).
    pub sys: PathBuf,
    /// The procfs mount (normally `/proc`).
    pub proc: PathBuf,
}

impl Roots {
    /// The running host's `/dev/kvm`, `/sys` and `/proc`.
    pub fn host() -> Self {
        Roots {
            dev_kvm: "/dev/kvm".into(),
            sys: "/sys".into(),
            proc: "/proc".into(),
        }
    }

    /// `dev/kvm`, `sys` and `proc` under one directory.
    pub fn under(root: &Path) -> Self {
        Roots {
            dev_kvm: root.join("dev/kvm"),
            sys: root.join("sys"),
            proc: root.join("proc"),
        }
    }
}

/// Detects the KVM kind of the running host.
pub fn detect() -> KvmKind {
    detect_in(&Roots::host())
}

/// Detects the KVM kind described by `roots`.
pub fn detect_in(roots: &Roots) -> KvmKind {
    if let Some(kind) = access_problem(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&roots.dev_kvm)
            .err(),
    ) {
        return kind;
    }
    if roots.sys.join("module/kvm_pvm").exists() {
        return KvmKind::Pvm;
    }
    let cpuinfo = std::fs::read_to_string(roots.proc.join("cpuinfo")).unwrap_or_default();
    match cpu_vendor(&cpuinfo) {
        Some(vendor) => KvmKind::Hardware { vendor },
        None => KvmKind::Unknown,
    }
}

/// What an error opening `/dev/kvm` means: absent, not permitted, or nothing (opened fine).
pub fn access_problem(open_error: Option<std::io::Error>) -> Option<KvmKind> {
    let err = open_error?;
    Some(match err.kind() {
        ErrorKind::NotFound => KvmKind::Absent,
        ErrorKind::PermissionDenied => KvmKind::NoPermission,
        // ENXIO/ENODEV: the node exists but no driver is behind it.
        _ => KvmKind::Absent,
    })
}

/// The virtualisation extension named in the `flags` lines of /proc/cpuinfo, if any.
pub fn cpu_vendor(cpuinfo: &str) -> Option<Vendor> {
    let flags = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':').map(|(_, f)| f));
    for line in flags {
        for flag in line.split_whitespace() {
            match flag {
                "vmx" => return Some(Vendor::Vmx),
                "svm" => return Some(Vendor::Svm),
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fake(kvm: bool, pvm: bool, flags: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("dev")).unwrap();
        fs::create_dir_all(root.path().join("proc")).unwrap();
        fs::create_dir_all(root.path().join("sys/module/kvm")).unwrap();
        if kvm {
            fs::write(root.path().join("dev/kvm"), "").unwrap();
        }
        if pvm {
            fs::create_dir_all(root.path().join("sys/module/kvm_pvm")).unwrap();
        }
        fs::write(
            root.path().join("proc/cpuinfo"),
            format!(
                "processor\t: 0\nflags\t\t: fpu vme {flags} sse2\n\nprocessor\t: 1\nflags\t\t: fpu {flags}\n"
            ),
        )
        .unwrap();
        root
    }

    #[test]
    fn no_device_node_is_absent_whatever_the_cpu() {
        let root = fake(false, false, "vmx");
        assert_eq!(detect_in(&Roots::under(root.path())), KvmKind::Absent);
    }

    #[test]
    fn intel_and_amd_flags_give_hardware_kvm() {
        let root = fake(true, false, "vmx");
        assert_eq!(
            detect_in(&Roots::under(root.path())),
            KvmKind::Hardware { vendor: Vendor::Vmx }
        );
        let root = fake(true, false, "svm");
        assert_eq!(
            detect_in(&Roots::under(root.path())),
            KvmKind::Hardware { vendor: Vendor::Svm }
        );
    }

    #[test]
    fn the_kvm_pvm_module_means_pvm_even_without_cpu_flags() {
        let root = fake(true, true, "hypervisor");
        assert_eq!(detect_in(&Roots::under(root.path())), KvmKind::Pvm);
    }

    #[test]
    fn kvm_without_pvm_or_flags_is_unknown() {
        let root = fake(true, false, "hypervisor");
        assert_eq!(detect_in(&Roots::under(root.path())), KvmKind::Unknown);
    }

    #[test]
    fn a_permission_error_on_open_is_no_permission() {
        // Root bypasses mode bits, so the open error itself is classified here.
        let denied = std::io::Error::from(ErrorKind::PermissionDenied);
        assert_eq!(access_problem(Some(denied)), Some(KvmKind::NoPermission));
        assert_eq!(access_problem(None), None);
        let missing = std::io::Error::from(ErrorKind::NotFound);
        assert_eq!(access_problem(Some(missing)), Some(KvmKind::Absent));
    }

    #[test]
    fn flags_are_whole_words_on_flags_lines() {
        assert_eq!(cpu_vendor("model name\t: vmx-like svmcpu\nflags\t: fpu\n"), None);
        assert_eq!(cpu_vendor("flags\t: fpu svm\n"), Some(Vendor::Svm));
    }
}
