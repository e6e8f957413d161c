//! What VM mode refuses before any work: limits it cannot honour, a kernel it cannot find or
//! boot, memory and vCPUs against the kernel and the host, volumes that are neither a directory
//! nor an image file, and a host whose KVM cannot run a stock guest (PVM).

use super::{VmError, VmOptions, DEFAULT_MEMORY_MIB};
use sandbox_protocol::isolation::ResourcePlan;
use sandbox_protocol::{Mode as GuestMode, Plan, VolumePlan};
use sandbox_vmm::{boot, check_host, kvm_kind, validate, DiskConfig, HostLimits, VmConfig};
use std::path::{Path, PathBuf};

/// The kernel to boot: `--kernel`, else the built guest kernel's vmlinux (PVH entry).
pub fn resolve_kernel(requested: Option<&Path>) -> Result<PathBuf, VmError> {
    match requested {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) => Err(VmError::KernelMissing(p.to_path_buf())),
        None => sandbox_kernel::cached()
            .map(|k| k.vmlinux)
            .ok_or(VmError::KernelNotBuilt),
    }
}

/// The guest memory in MiB for a memory limit in bytes (default [`DEFAULT_MEMORY_MIB`]).
pub fn memory_mib(memory_bytes: Option<u64>) -> Result<u64, VmError> {
    match memory_bytes {
        None => Ok(DEFAULT_MEMORY_MIB),
        Some(b) if b % (1 << 20) == 0 && b > 0 => Ok(b >> 20),
        Some(b) => Err(VmError::MemoryNotMib(b)),
    }
}

/// The vCPU count for a CPU limit (default 1): whole numbers only.
pub fn vcpus(cpus: Option<f64>) -> Result<u32, VmError> {
    match cpus {
        None => Ok(1),
        Some(c) if c.fract() == 0.0 && (1.0..=1024.0).contains(&c) => Ok(c as u32),
        Some(c) => Err(VmError::FractionalCpus(c)),
    }
}

/// The host's available memory (MemAvailable) in MiB, if it can be read.
pub fn available_mib() -> Option<u64> {
    parse_available_kib(&std::fs::read_to_string("/proc/meminfo").ok()?).map(|kib| kib / 1024)
}

fn parse_available_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Refuses guest memory the host cannot give now: the VMM would map it, and the first time the
/// guest touched it all the host's OOM killer would choose a victim.
fn check_available(memory_mib: u64, available: Option<u64>) -> Result<(), VmError> {
    match available {
        Some(available_mib) if memory_mib > available_mib => Err(VmError::MemoryNotAvailable {
            requested_mib: memory_mib,
            available_mib,
        }),
        _ => Ok(()),
    }
}

/// The limits and volumes VM mode cannot honour.
fn check_limits(resources: &ResourcePlan, volumes: &[VolumePlan]) -> Result<(), VmError> {
    if resources.pids.is_some() {
        return Err(VmError::Unsupported {
            flag: "--pids",
            remedy: "the guest kernel has no limit to set; drop --pids or use --mode container",
        });
    }
    for v in volumes {
        let host = Path::new(&v.source);
        if !host.is_absolute() || !(host.is_dir() || host.is_file()) {
            return Err(VmError::Volume {
                host: host.to_path_buf(),
                why: "not an existing directory or disk image file: create it, or fix --volume".into(),
            });
        }
    }
    Ok(())
}

/// What [`check`] settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub kernel: PathBuf,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Whether a PVM host may be tried (a `--kernel` was given).
    pub allow_pvm: bool,
}

/// Everything that can be refused before any work, for a plan's limits and volumes. The CLI
/// calls it before it even resolves the image; `create` calls it first.
pub fn check(resources: &ResourcePlan, volumes: &[VolumePlan], opts: &VmOptions) -> Result<Checked, VmError> {
    check_limits(resources, volumes)?;
    let memory_mib = memory_mib(resources.memory.limit.map(|m| m as u64))?;
    check_available(memory_mib, available_mib())?;
    let vcpus = vcpus(resources.cpu.as_cpus())?;
    let kernel_path = resolve_kernel(opts.kernel.as_deref())?;
    let kernel = boot::loader::inspect(&kernel_path)?;
    let allow_pvm = opts.kernel.is_some();
    let probe = VmConfig {
        memory_mib,
        vcpus,
        plan: Some(Plan::new(GuestMode::Vm, Vec::new())),
        disks: volumes
            .iter()
            .map(|v| DiskConfig {
                path: PathBuf::from(&v.source),
                read_only: v.read_only,
            })
            .collect(),
        ..VmConfig::new(
            kernel_path.clone(),
            DiskConfig {
                path: PathBuf::new(),
                read_only: false,
            },
        )
    };
    validate(&probe, &kernel, &HostLimits::probe())?;
    check_host(kvm_kind::detect(), allow_pvm)?;
    Ok(Checked {
        kernel: kernel_path,
        memory_mib,
        vcpus,
        allow_pvm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_beyond_what_is_available_is_refused() {
        let meminfo = "MemTotal: 24000000 kB\nMemFree: 1000 kB\nMemAvailable: 2097152 kB\n";
        assert_eq!(parse_available_kib(meminfo), Some(2097152));
        assert!(check_available(2048, Some(2048)).is_ok());
        let err = check_available(4096, Some(2048)).unwrap_err().to_string();
        assert!(err.contains("4096 MiB") && err.contains("2048 MiB"), "{err}");
    }

    #[test]
    fn memory_and_cpus_map_to_whole_mib_and_vcpus() {
        assert_eq!(memory_mib(None).unwrap(), DEFAULT_MEMORY_MIB);
        assert_eq!(memory_mib(Some(256 << 20)).unwrap(), 256);
        assert!(matches!(
            memory_mib(Some((1 << 20) + 1)),
            Err(VmError::MemoryNotMib(_))
        ));
        assert_eq!(vcpus(None).unwrap(), 1);
        assert_eq!(vcpus(Some(2.0)).unwrap(), 2);
        let err = vcpus(Some(0.5)).unwrap_err();
        assert!(err.to_string().contains("whole number"), "{err}");
    }

    #[test]
    fn pids_and_missing_volumes_are_refused_with_the_flag() {
        let pids = ResourcePlan {
            pids: Some(10),
            ..ResourcePlan::default()
        };
        let err = check_limits(&pids, &[]).unwrap_err();
        assert!(err.to_string().contains("--pids"), "{err}");
        let volume = VolumePlan {
            source: "/nonexistent-volume".into(),
            target: "/data".into(),
            read_only: false,
        };
        let err = check_limits(&ResourcePlan::default(), &[volume]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-volume"), "{err}");
    }

    #[test]
    fn a_missing_kernel_file_is_named() {
        let err = resolve_kernel(Some(Path::new("/nonexistent/vmlinux"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }
}
