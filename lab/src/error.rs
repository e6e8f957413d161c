//! Everything that can go wrong in the lab, each message naming the bad input and the remedy.

use std::path::PathBuf;

/// Errors from fetching the L1 kernel, building the L1 initramfs, or running L1.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("qemu-system-x86_64 not found on PATH: run `apt-get install qemu-system-x86`")]
    QemuMissing,
    #[error("{tool} not found on PATH: run `apt-get install {package}`")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error(
        "apt cannot find the L1 kernel package {package}: run `apt-get update` (the lab fetches its L1 \
         kernel from Debian's archive){detail}"
    )]
    PackageNotFound { package: String, detail: String },
    #[error("`{command}` failed: {detail}")]
    CommandFailed { command: String, detail: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel module {module} is not in {}: the L1 kernel package is incomplete; delete that directory to fetch it again", dir.display())]
    ModuleMissing { module: String, dir: PathBuf },
    #[error("{} is dynamically linked and its libraries could not be listed ({detail}): {remedy}", path.display())]
    Libraries {
        path: PathBuf,
        detail: String,
        remedy: String,
    },
    #[error("{0}")]
    BinaryNotFound(String),
    #[error("bad lab option: {0}")]
    BadOption(String),
    #[error(
        "L1 failed to load kvm_amd: /dev/kvm did not appear inside L1 (is QEMU new enough for `-cpu max` \
         to expose SVM?). L1 console tail:\n{console_tail}"
    )]
    KvmUnavailable { console_tail: String },
    #[error(
        "L1's own kernel crashed ({signature}) before the command reported its exit status: the \
         emulated host failed (QEMU TCG running nested KVM), not the command. Rerun it; if it recurs, \
         report it with this L1 console tail:\n{console_tail}"
    )]
    L1KernelCrashed { signature: String, console_tail: String },
    #[error("L1 ended ({qemu_status}) without reporting the command's exit status. L1 console tail:\n{console_tail}")]
    NoExitStatus {
        qemu_status: String,
        console_tail: String,
    },
    #[error("QEMU could not start L1: {stderr} (check --l1-cpu, --memory and --cpus)")]
    QemuFailed { stderr: String },
    #[error("cannot export {l1_dir} out of L1: {detail}")]
    Export { l1_dir: String, detail: String },
    #[error(
        "VM mode in the lab needs the guest kernel built on the host first (it is shipped into L1): \
         run `sandbox kernel build`"
    )]
    GuestKernelMissing,
    #[error("interrupted: L1 was stopped")]
    Interrupted,
}

impl LabError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> LabError {
        LabError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
