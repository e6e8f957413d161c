//! The VMM's error type: every way `run` can fail before or while building the VM, each naming
//! the bad input and what to do about it.

use std::path::PathBuf;

/// Why the VMM could not start (or keep running) a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("/dev/kvm does not exist: load the kvm module (`modprobe kvm_intel` or `modprobe kvm_amd`) or run on a host with hardware virtualisation (or use `sandbox lab`)")]
    KvmAbsent,
    #[error("/dev/kvm cannot be opened by this user: add the user to the `kvm` group or run as root")]
    KvmPermission,
    #[error("this host's /dev/kvm is PVM (the kvm_pvm module): a standard kernel cannot run here; use `sandbox lab -- run --mode vm ...` (a nested hardware KVM) or pass a PVM-enabled kernel with `--kernel`")]
    PvmHost,
    #[error("opening /dev/kvm failed: {0}")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("KVM does not offer {0}, which the VMM needs: use a newer host kernel")]
    KvmCapability(&'static str),
    #[error("KVM call {call} failed: {source}")]
    KvmCall {
        call: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("kernel {path}: cannot read it: {source}")]
    KernelRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {path} is neither a bzImage nor an ELF vmlinux: pass the `bzImage` or `vmlinux` a kernel build produced")]
    KernelFormat { path: PathBuf },
    #[error("kernel {path} is a 32-bit bzImage (no 64-bit entry point): build an x86_64 kernel")]
    Kernel32Bit { path: PathBuf },
    #[error("kernel {path} could not be loaded into guest memory: {detail}")]
    KernelLoad { path: PathBuf, detail: String },
    #[error("--memory {requested_mib} MiB is too small for this kernel: it needs at least {needed_mib} MiB")]
    MemoryTooSmall { requested_mib: u64, needed_mib: u64 },
    #[error("--memory {requested_mib} MiB is more than this host has ({host_mib} MiB): ask for less")]
    MemoryTooLarge { requested_mib: u64, host_mib: u64 },
    #[error("--cpus {requested} is not possible: this VMM supports 1 to {max} vCPUs here")]
    BadVcpuCount { requested: u32, max: u32 },
    #[error("disk {path}: cannot open it{}: {source}", if *read_only { " read-only" } else { " read-write" })]
    DiskOpen {
        path: PathBuf,
        read_only: bool,
        #[source]
        source: std::io::Error,
    },
    #[error("too many devices: at most {max} virtio devices fit the MMIO window")]
    TooManyDevices { max: usize },
    #[error("kernel command line is too long ({len} bytes, the limit is {max}): shorten --cmdline-extra or the volume list")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line is invalid: {0}")]
    Cmdline(String),
    #[error("guest memory of {mib} MiB could not be allocated: {detail}")]
    Memory { mib: u64, detail: String },
    #[error("tap device {name}: permission denied: run as root or grant CAP_NET_ADMIN")]
    TapPermission { name: String },
    #[error("tap device {name}: {detail}")]
    Tap { name: String, detail: String },
    #[error("vsock {path}: {detail}")]
    Vsock { path: PathBuf, detail: String },
    #[error("the plan block could not be made: {0}")]
    PlanBlock(#[source] std::io::Error),
    #[error("VMM set-up failed at {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("a VMM thread failed: {0}")]
    Thread(String),
    #[error("VMM device set-up failed: {0} (a VMM bug: please report it)")]
    Setup(String),
}

impl VmmError {
    /// Wraps a failed KVM call with the name of the call.
    pub(crate) fn kvm(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
        move |source| VmmError::KvmCall { call, source }
    }

    /// Wraps a failed host I/O step with what was being done.
    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
        move |source| VmmError::Io { what, source }
    }
}
