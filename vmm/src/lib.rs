//! The KVM microVM monitor behind `sandbox run --mode vm`. It depends on the rust-vmm crates
//! and the host↔guest protocol only; what a sandbox is (its disks, network address, Plan) is
//! the runtime core's VM backend's business.
//!
//! [`run`] boots a guest kernel with its root disk (`/dev/vda`), the Plan as a read-only block
//! device (`/dev/vdb`, named by `sandbox.plan=`), volume disks after it, an optional virtio-net on
//! a tap, an optional virtio-vsock whose host end is a unix socket (see
//! [`devices::virtio::vsock`]), a serial console, and the boot/exit port; it returns when the
//! guest ends, with the workload's status, phase timings and the VMM's own memory use.

pub mod boot;
pub mod bus;
pub mod console_filter;
pub mod console_input;
pub mod console_signals;
pub mod console_writer;
pub mod devices;
pub mod error;
pub mod event_loop;
pub mod halt_check;
pub mod kvm_kind;
pub mod layout;
pub mod probe;
pub mod rss;
pub mod snapshot;
pub mod state;
pub mod stop_signals;
pub mod tap;
pub mod vcpu;
pub mod vm;

mod machine;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

pub use boot::cmdline::disk_device_name;
pub use boot::loader::{KernelFormat, KernelInfo};
pub use error::VmmError;
use sandbox_protocol::Plan;

/// The exit status for a VM that ended without its workload's status: a kernel panic, a triple
/// fault, a reboot or power-off the guest program did not announce, or a vCPU KVM could not run.
pub const CRASH_EXIT_STATUS: i32 = 120;

/// A virtio-blk disk backed by a host file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

/// `--net host`: a tap device whose host end gets `host_address/prefix_len`; the guest side's
/// address travels in the Plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The tap's name (at most 15 bytes), e.g. `sbxt<id>`.
    pub tap_name: String,
    pub host_address: Ipv4Addr,
    pub prefix_len: u8,
    pub guest_mac: [u8; 6],
}

/// The virtio-vsock device: the guest gets CID `guest_cid`; host programs reach its listeners
/// through the unix socket `uds_path` (`CONNECT <port>\n`, answered `OK <host port>\n`), and
/// the guest's connections to host port `P` go to the unix socket `<uds_path>_P`. See
/// [`devices::virtio::vsock`]. The VMM creates `uds_path` (it must not exist) and removes it
/// when the VM ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    pub uds_path: PathBuf,
    /// 3 or more (0-2 are reserved); every VM can have 3, CIDs are per VM here.
    pub guest_cid: u64,
}

/// Where the guest console goes. A writer thread of its own writes to it, so a sink that stalls
/// (a pipe nobody reads) costs console output, never the guest's progress or the VMM's end: see
/// [`console_writer`].
pub enum SerialSink {
    /// The VMM's stdout.
    Stdout,
    /// Nowhere (the last lines are still kept for crash reports).
    Null,
    /// Any writer (tests, the bench).
    Writer(Box<dyn Write + Send>),
}

impl std::fmt::Debug for SerialSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SerialSink::Stdout => "Stdout",
            SerialSink::Null => "Null",
            SerialSink::Writer(_) => "Writer",
        })
    }
}

/// Everything [`run`] needs.
#[derive(Debug)]
pub struct VmConfig {
    /// A bzImage or an ELF vmlinux (PVH entry used when the note is present).
    pub kernel: PathBuf,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Appended to the kernel command line (`--cmdline-extra`).
    pub cmdline_extra: String,
    /// The root disk, `/dev/vda` (the per-VM writable copy; its owner removes it).
    pub root: DiskConfig,
    /// The guest program's Plan, given to the guest as a read-only disk after the root disk
    /// (with `mode` set to VM and the ready channel set to the boot/exit port). Volume sources in
    /// it are the names [`VmConfig::extra_disk_device`] gives.
    pub plan: Option<Plan>,
    /// More disks (volumes), after the plan disk: see [`VmConfig::extra_disk_device`].
    pub disks: Vec<DiskConfig>,
    pub net: Option<NetConfig>,
    /// A tap the caller already created and configured for `net` (its address claimed, the link
    /// up); `None` makes the VMM create `net.tap_name` and give it `net.host_address` itself.
    pub tap: Option<tap::Tap>,
    /// A virtio-vsock device (after the net device), `None` for none.
    pub vsock: Option<VsockConfig>,
    pub serial: SerialSink,
    /// Feed the VMM's stdin to the guest console.
    pub serial_input: bool,
    /// The console is relayed to a terminal (`sandbox run -t`): its bytes pass unchanged and
    /// at once instead of by lines with CRLF turned into LF.
    pub console_raw: bool,
    /// Show all kernel messages (no `quiet`).
    pub verbose_kernel: bool,
    /// Boot even on a PVM host (for a PVM-enabled `--kernel`).
    pub allow_pvm: bool,
    /// When the VMM started: timings count from here.
    pub started: Instant,
}

impl VmConfig {
    /// A config with 128 MiB, one vCPU, no plan, no extra disks, no network, console on stdout.
    pub fn new(kernel: PathBuf, root: DiskConfig) -> VmConfig {
        VmConfig {
            kernel,
            memory_mib: 128,
            vcpus: 1,
            cmdline_extra: String::new(),
            root,
            plan: None,
            disks: Vec::new(),
            net: None,
            tap: None,
            vsock: None,
            serial: SerialSink::Stdout,
            serial_input: false,
            console_raw: false,
            verbose_kernel: false,
            allow_pvm: false,
            started: Instant::now(),
        }
    }

    /// The guest device name of `disks[index]` (`/dev/vdc` for the first one when there is a
    /// plan), for the Plan's volume list.
    pub fn extra_disk_device(&self, index: usize) -> String {
        disk_device_name(1 + usize::from(self.plan.is_some()) + index)
    }

    /// The guest device name of the plan disk.
    pub fn plan_device(&self) -> Option<String> {
        self.plan.as_ref().map(|_| disk_device_name(1))
    }

    /// How many virtio devices the VM gets.
    pub fn device_count(&self) -> usize {
        1 + usize::from(self.plan.is_some())
            + self.disks.len()
            + usize::from(self.net.is_some())
            + usize::from(self.vsock.is_some())
    }
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The guest program reported the workload's exit status, then rebooted.
    GuestExit(u8),
    /// The guest rebooted (or halted) without reporting a status.
    Reboot,
    /// The guest powered off or halted without reporting a status.
    PowerOff,
    /// The guest kernel panicked.
    Panic { last_lines: Vec<String> },
    /// A vCPU triple-faulted.
    TripleFault { last_lines: Vec<String> },
    /// KVM could not run a vCPU.
    VcpuFailure { reason: String, last_lines: Vec<String> },
    /// The VMM was told to stop by this signal.
    Signal(i32),
}

impl Ending {
    /// The status the VMM should exit with.
    pub fn exit_status(&self) -> i32 {
        match self {
            Ending::GuestExit(s) => i32::from(*s),
            Ending::Signal(n) => 128 + n,
            Ending::Reboot
            | Ending::PowerOff
            | Ending::Panic { .. }
            | Ending::TripleFault { .. }
            | Ending::VcpuFailure { .. } => CRASH_EXIT_STATUS,
        }
    }

    /// A one-line explanation plus the console's last lines, for endings that need one.
    pub fn message(&self) -> Option<String> {
        let with_lines = |head: String, lines: &[String]| {
            let mut m = head;
            if !lines.is_empty() {
                m.push_str("; last console lines:\n");
                m.push_str(&lines.join("\n"));
            }
            m
        };
        match self {
            Ending::GuestExit(_) => None,
            Ending::Reboot => Some("the guest rebooted without reporting an exit status".into()),
            Ending::PowerOff => Some("the guest powered off without reporting an exit status".into()),
            Ending::Panic { last_lines } => Some(with_lines("the guest kernel panicked".into(), last_lines)),
            Ending::TripleFault { last_lines } => {
                Some(with_lines("the guest triple-faulted".into(), last_lines))
            }
            Ending::VcpuFailure { reason, last_lines } => {
                Some(with_lines(format!("the VM failed: {reason}"), last_lines))
            }
            Ending::Signal(n) => Some(format!("the VMM was stopped by signal {n}")),
        }
    }
}

/// Phase times in microseconds since [`VmConfig::started`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// VM, memory, devices and vCPUs set up; the kernel loaded.
    pub vm_built_us: u64,
    /// The boot vCPU first entered the guest.
    pub kernel_entry_us: Option<u64>,
    /// The guest program started as init (boot/exit port).
    pub init_started_us: Option<u64>,
    /// The workload said `ready`.
    pub ready_us: Option<u64>,
    /// The guest reported its exit status.
    pub exit_reported_us: Option<u64>,
    /// The VMM saw the VM end.
    pub ended_us: u64,
}

impl Timings {
    /// The phases reached, in order, as `(name, µs since start)`: `vm-built`, `kernel-entry`,
    /// `init-started`, `ready`, `exit-reported`, `ended`.
    pub fn phases(&self) -> Vec<(&'static str, u64)> {
        let mut out = vec![("vm-built", self.vm_built_us)];
        for (name, t) in [
            ("kernel-entry", self.kernel_entry_us),
            ("init-started", self.init_started_us),
            ("ready", self.ready_us),
            ("exit-reported", self.exit_reported_us),
        ] {
            if let Some(t) = t {
                out.push((name, t));
            }
        }
        out.push(("ended", self.ended_us));
        out
    }
}

/// What [`run`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmOutcome {
    pub ending: Ending,
    pub timings: Timings,
    /// The VMM process's resident memory, not counting guest memory pages.
    pub vmm_rss_bytes_excluding_guest: u64,
    /// How the kernel was entered.
    pub boot_protocol: &'static str,
    /// Guest console bytes the sink did not get: it fell behind (its queue was full), failed,
    /// or was still stalled when the VM ended.
    pub console_bytes_dropped: u64,
}

impl VmOutcome {
    pub fn exit_status(&self) -> i32 {
        self.ending.exit_status()
    }
}

/// What this host allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    pub memory_mib: u64,
    pub max_vcpus: u32,
}

impl HostLimits {
    /// Reads the host's memory and KVM's vCPU limit (when /dev/kvm opens).
    pub fn probe() -> HostLimits {
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_mem_total_kib(&m))
            .map_or(u64::MAX, |kib| kib / 1024);
        let kvm_max = kvm_ioctls::Kvm::new().ok().map(|k| k.get_max_vcpus() as u32);
        let max_vcpus = kvm_max
            .unwrap_or(boot::mptable::MAX_SUPPORTED_CPUS)
            .min(boot::mptable::MAX_SUPPORTED_CPUS);
        HostLimits {
            memory_mib,
            max_vcpus,
        }
    }
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Checks `config` against the kernel's needs and the host's limits, before anything is built.
pub fn validate(config: &VmConfig, kernel: &KernelInfo, limits: &HostLimits) -> Result<(), VmmError> {
    if config.memory_mib < kernel.min_memory_mib {
        return Err(VmmError::MemoryTooSmall {
            requested_mib: config.memory_mib,
            needed_mib: kernel.min_memory_mib,
        });
    }
    if config.memory_mib > limits.memory_mib {
        return Err(VmmError::MemoryTooLarge {
            requested_mib: config.memory_mib,
            host_mib: limits.memory_mib,
        });
    }
    if config.vcpus == 0 || config.vcpus > limits.max_vcpus {
        return Err(VmmError::BadVcpuCount {
            requested: config.vcpus,
            max: limits.max_vcpus,
        });
    }
    if config.device_count() > layout::MAX_VIRTIO_DEVICES {
        return Err(VmmError::TooManyDevices {
            max: layout::MAX_VIRTIO_DEVICES,
        });
    }
    if let Some(v) = &config.vsock {
        if !(3..u64::from(u32::MAX)).contains(&v.guest_cid) {
            return Err(VmmError::Vsock {
                path: v.uds_path.clone(),
                detail: format!(
                    "guest CID {} is reserved: use 3 or more (below 2^32 - 1)",
                    v.guest_cid
                ),
            });
        }
    }
    Ok(())
}

/// Refuses hosts whose KVM cannot boot this kernel: no /dev/kvm, no permission, or PVM (unless
/// the config allows it, for a PVM-enabled kernel).
pub fn check_host(kind: kvm_kind::KvmKind, allow_pvm: bool) -> Result<(), VmmError> {
    match kind {
        kvm_kind::KvmKind::Absent => Err(VmmError::KvmAbsent),
        kvm_kind::KvmKind::NoPermission => Err(VmmError::KvmPermission),
        kvm_kind::KvmKind::Pvm if !allow_pvm => Err(VmmError::PvmHost),
        _ => Ok(()),
    }
}

/// Boots the VM described by `config` and runs it to its end.
pub fn run(config: VmConfig) -> Result<VmOutcome, VmmError> {
    let kernel = boot::loader::inspect(&config.kernel)?;
    validate(&config, &kernel, &HostLimits::probe())?;
    check_host(kvm_kind::detect(), config.allow_pvm)?;
    machine::Machine::build(config, kernel)?.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig::new(
            PathBuf::from("vmlinux"),
            DiskConfig {
                path: PathBuf::from("root.ext4"),
                read_only: false,
            },
        )
    }

    const KERNEL: KernelInfo = KernelInfo {
        format: KernelFormat::Elf,
        min_memory_mib: 48,
    };
    const HOST: HostLimits = HostLimits {
        memory_mib: 4096,
        max_vcpus: 8,
    };

    #[test]
    fn valid_config_passes() {
        validate(&config(), &KERNEL, &HOST).unwrap();
    }

    #[test]
    fn memory_below_the_kernel_or_above_the_host_is_refused() {
        let mut c = config();
        c.memory_mib = 32;
        let err = validate(&c, &KERNEL, &HOST).unwrap_err();
        assert!(
            matches!(err, VmmError::MemoryTooSmall { needed_mib: 48, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("at least 48 MiB"), "{err}");
        c.memory_mib = 8192;
        let err = validate(&c, &KERNEL, &HOST).unwrap_err();
        assert!(
            matches!(err, VmmError::MemoryTooLarge { host_mib: 4096, .. }),
            "{err}"
        );
    }

    #[test]
    fn zero_or_too_many_vcpus_are_refused() {
        let mut c = config();
        for bad in [0, 9, 300] {
            c.vcpus = bad;
            let err = validate(&c, &KERNEL, &HOST).unwrap_err();
            assert!(matches!(err, VmmError::BadVcpuCount { max: 8, .. }), "{err}");
        }
        c.vcpus = 8;
        validate(&c, &KERNEL, &HOST).unwrap();
    }

    #[test]
    fn too_many_disks_are_refused() {
        let mut c = config();
        c.disks = vec![c.root.clone(); layout::MAX_VIRTIO_DEVICES];
        assert!(matches!(
            validate(&c, &KERNEL, &HOST),
            Err(VmmError::TooManyDevices { .. })
        ));
    }

    #[test]
    fn vsock_counts_as_a_device_and_reserved_cids_are_refused() {
        let mut c = config();
        let before = c.device_count();
        c.vsock = Some(VsockConfig {
            uds_path: PathBuf::from("/run/v.sock"),
            guest_cid: 3,
        });
        assert_eq!(c.device_count(), before + 1);
        validate(&c, &KERNEL, &HOST).unwrap();
        for bad in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
            c.vsock.as_mut().unwrap().guest_cid = bad;
            let err = validate(&c, &KERNEL, &HOST).unwrap_err();
            assert!(err.to_string().contains("reserved"), "{err}");
        }
    }

    #[test]
    fn host_checks_name_pvm_and_allow_it_on_request() {
        use kvm_kind::{KvmKind, Vendor};
        let err = check_host(KvmKind::Pvm, false).unwrap_err();
        assert!(
            err.to_string().contains("standard kernel cannot run here"),
            "{err}"
        );
        assert!(err.to_string().contains("sandbox lab"), "{err}");
        check_host(KvmKind::Pvm, true).unwrap();
        assert!(matches!(
            check_host(KvmKind::Absent, false),
            Err(VmmError::KvmAbsent)
        ));
        assert!(matches!(
            check_host(KvmKind::NoPermission, true),
            Err(VmmError::KvmPermission)
        ));
        check_host(KvmKind::Hardware { vendor: Vendor::Svm }, false).unwrap();
    }

    #[test]
    fn device_names_follow_the_disk_order() {
        let mut c = config();
        c.disks.push(c.root.clone());
        assert_eq!(c.extra_disk_device(0), "/dev/vdb");
        assert_eq!(c.plan_device(), None);
        c.plan = Some(Plan::new(sandbox_protocol::Mode::Vm, vec!["true".into()]));
        assert_eq!(c.plan_device().as_deref(), Some("/dev/vdb"));
        assert_eq!(c.extra_disk_device(0), "/dev/vdc");
    }

    #[test]
    fn endings_map_to_statuses_and_messages() {
        assert_eq!(Ending::GuestExit(3).exit_status(), 3);
        assert_eq!(Ending::Signal(15).exit_status(), 143);
        let panic = Ending::Panic {
            last_lines: vec!["Kernel panic - not syncing: x".into()],
        };
        assert_eq!(panic.exit_status(), CRASH_EXIT_STATUS);
        assert!(panic.message().unwrap().contains("Kernel panic - not syncing"));
        assert_eq!(Ending::GuestExit(0).message(), None);
    }

    #[test]
    fn phases_list_only_what_was_reached_in_order() {
        let t = Timings {
            vm_built_us: 5,
            kernel_entry_us: Some(7),
            init_started_us: None,
            ready_us: None,
            exit_reported_us: Some(90),
            ended_us: 100,
        };
        let names: Vec<&str> = t.phases().iter().map(|p| p.0).collect();
        assert_eq!(names, ["vm-built", "kernel-entry", "exit-reported", "ended"]);
    }

    #[test]
    fn meminfo_total_is_read_in_kib() {
        assert_eq!(
            parse_mem_total_kib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000)
        );
        assert_eq!(parse_mem_total_kib("nothing"), None);
    }
}
