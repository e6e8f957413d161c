//! VM mode as a [`Backend`]: a Plan and an image in, a microVM booted by `sandbox-vmm` out.
//!
//! `create` refuses what can be refused before anything exists ([`check`]), then, each piece
//! owned by a value that removes it when dropped: the image's root disk (cached, [`disks`]), the
//! per-VM writable copy and one ext4 image per directory volume in the sandbox's directory, and
//! for `--net host` the tap `sbxt<id>`, whose host end gets a /30 from the core's address
//! allocator (the container's veth pairs use the same one). The VMM runs in this process: it
//! boots in `wait`, which returns when the guest ends. `delete` removes the disks (or keeps the
//! root disk with `--keep-disk`) and the directory.

pub mod agent;
pub mod bundle_disk;
pub mod check;
pub mod disks;
pub mod exec;
pub mod oci;

use crate::backend::{Backend, CreateRequest, Created, Holding};
use crate::error::CoreError;
use crate::state::{Mode, SandboxDir, State};
use sandbox_disk::{DiskError, VmDisk};
use sandbox_image::{ImageError, ResolvedImage};
use sandbox_protocol::trace;
use sandbox_protocol::{exit_device, Plan, ReadyChannel, VolumePlan};
use sandbox_spec::{phase, NetMode, Outcome, ResourceFigures, Timing};
use sandbox_vmm::console_filter::ConsoleFilter;
use sandbox_vmm::stop_signals::StopSignals;
use sandbox_vmm::tap::Tap;
use sandbox_vmm::{kvm_kind, DiskConfig, NetConfig, SerialSink, VmConfig, VsockConfig};
use std::path::PathBuf;
use std::time::Instant;

pub use check::{check, resolve_kernel, Checked};

/// The guest memory when `--memory` is not given.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// The prefix of a VM's tap name (`sbxt<id>`; container veths are `sbx<id>`).
pub const TAP_PREFIX: &str = "sbxt";
/// The guest's vsock CID (each VM has its own device and socket, so every guest can be 3).
pub const GUEST_CID: u64 = 3;
/// The exit status for a VM that could not be started (like `docker run`, and container mode).
pub const LAUNCH_FAILURE_STATUS: i32 = 125;

/// Phase names only VM mode has (the shared ones are in [`sandbox_spec::phase`]).
pub mod vm_phase {
    /// The per-VM root disk (and volume images) are ready.
    pub const DISKS_READY: &str = "disks-ready";
    /// The VM, its memory and devices are built and the kernel is loaded.
    pub const VM_BUILT: &str = "vm-built";
    /// The boot vCPU first entered the guest kernel.
    pub const KERNEL_ENTRY: &str = "kernel-entry";
    /// The guest program started as init.
    pub const GUEST_INIT: &str = "guest-init";
    /// The guest reported the workload's exit status.
    pub const EXIT_REPORTED: &str = "exit-reported";
}

/// What VM mode needs beyond the Plan.
#[derive(Debug)]
pub struct VmOptions {
    /// `--kernel`: a bzImage or ELF vmlinux; `None` uses the built guest kernel.
    pub kernel: Option<PathBuf>,
    /// `--cmdline-extra`: appended to the kernel command line.
    pub cmdline_extra: String,
    /// `--keep-disk`: keep the per-VM root disk after the VM ends.
    pub keep_disk: bool,
    /// Show all kernel messages on the console.
    pub verbose_kernel: bool,
    /// Print the kernel's boot messages as trace lines (`--trace`).
    pub trace: bool,
    /// Where the guest console goes (the workload's output): normally stdout. The kernel's
    /// farewell line is filtered out ([`sandbox_vmm::console_filter`]).
    pub serial: SerialSink,
    /// When the launcher started: the timings count from here.
    pub started: Instant,
}

impl VmOptions {
    /// The built kernel, console on stdout, timings from now.
    pub fn new() -> VmOptions {
        VmOptions {
            kernel: None,
            cmdline_extra: String::new(),
            keep_disk: false,
            verbose_kernel: false,
            trace: false,
            serial: SerialSink::Stdout,
            started: Instant::now(),
        }
    }
}

impl Default for VmOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// What one VM run gives back besides the [`Outcome`].
#[derive(Debug, Clone, PartialEq)]
pub struct VmRun {
    pub outcome: Outcome,
    /// `--keep-disk`: where the per-VM root disk now is.
    pub kept_disk: Option<PathBuf>,
    /// The VMM's resident memory, guest memory not counted.
    pub vmm_rss_bytes: u64,
    /// How the kernel was entered (`pvh`, `linux-64 (bzImage)`, ...).
    pub boot_protocol: &'static str,
    /// The sandbox id (run directory, tap name).
    pub id: String,
}

impl VmRun {
    /// The `--timings` report: the phases (as container mode prints them) plus the VMM's RSS.
    pub fn timings_report(&self) -> String {
        format!(
            "{}{:<18} {:>10} KiB  (VMM RSS, guest memory excluded; boot: {})\n",
            self.outcome.timings_report(),
            "vmm-rss",
            self.vmm_rss_bytes / 1024,
            self.boot_protocol
        )
    }
}

/// Why a VM could not be run (each a one-line message naming the input and the fix).
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("the guest kernel is not built: run `sandbox kernel build` once (about 3 to 7 minutes), or pass a kernel with --kernel")]
    KernelNotBuilt,
    #[error("--kernel {}: no such file: pass the path of a bzImage or vmlinux", .0.display())]
    KernelMissing(PathBuf),
    #[error("--cpus {0}: a VM gets whole vCPUs: pass a whole number such as 1 or 2")]
    FractionalCpus(f64),
    #[error("--memory {0} bytes is not a whole number of MiB: give the size in MiB, e.g. 256M")]
    MemoryNotMib(u64),
    #[error(
        "--memory {requested_mib} MiB is more than this host has available now \
         ({available_mib} MiB, MemAvailable): give less, or free memory first"
    )]
    MemoryNotAvailable { requested_mib: u64, available_mib: u64 },
    #[error("{flag} is not available in VM mode: {remedy}")]
    Unsupported {
        flag: &'static str,
        remedy: &'static str,
    },
    #[error("volume {}: {why}", host.display())]
    Volume { host: PathBuf, why: String },
    #[error(transparent)]
    Vmm(#[from] sandbox_vmm::VmmError),
    #[error("root disk of image {image:?}: {source}")]
    RootDisk {
        image: String,
        #[source]
        source: DiskError,
    },
    #[error("image {image:?}: {source}")]
    Image {
        image: String,
        #[source]
        source: ImageError,
    },
    #[error("volume {}: {source}", host.display())]
    VolumeDisk {
        host: PathBuf,
        #[source]
        source: DiskError,
    },
    #[error("stopped by signal {0} before the VM started (everything it had made is removed)")]
    Interrupted(i32),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl VmError {
    /// The status the CLI exits with for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            VmError::Interrupted(signal) => 128 + signal,
            _ => LAUNCH_FAILURE_STATUS,
        }
    }
}

/// A VM built in `create`, booted in `wait`.
struct Prepared {
    /// Taken by `wait`, which gives it to the VMM.
    config: Option<VmConfig>,
    root: VmDisk,
    disks_ready_us: u64,
    allow_pvm: bool,
    memory_mib: u64,
}

/// VM mode, for one image.
pub struct VmBackend {
    image: ResolvedImage,
    opts: Option<VmOptions>,
    /// What `check` settled, and the cached root disk.
    checked: Option<(Checked, PathBuf)>,
    signals: Option<StopSignals>,
    prepared: Option<Prepared>,
    /// Kept by `delete` for the caller: the VM's extras.
    last: Option<VmRun>,
}

impl VmBackend {
    pub fn new(image: ResolvedImage, opts: VmOptions) -> VmBackend {
        VmBackend {
            image,
            opts: Some(opts),
            checked: None,
            signals: None,
            prepared: None,
            last: None,
        }
    }

    /// What the last run gave besides its outcome (after `delete`).
    pub fn take_run(&mut self) -> Option<VmRun> {
        self.last.take()
    }

    /// A stop signal taken between set-up steps ends the launch there, everything removed.
    fn interrupted(&self) -> Result<(), CoreError> {
        match self.signals.as_ref().and_then(StopSignals::take_pending) {
            Some(signal) => Err(VmError::Interrupted(signal as i32).into()),
            None => Ok(()),
        }
    }
}

/// The guest MAC of sandbox `id` (locally administered, derived from the id).
fn guest_mac(id: &str) -> [u8; 6] {
    let mut mac = [0x02, 0x53, 0x42, 0, 0, 0];
    let n = u32::from_str_radix(id, 16).unwrap_or(0).to_be_bytes();
    mac[3..].copy_from_slice(&n[1..]);
    mac
}

/// `--net host`: the tap and its /30 from the core's allocator (the same as the veth pairs').
fn tap(id: &str) -> Result<(Tap, NetConfig, sandbox_protocol::NetPlan), CoreError> {
    let began = trace::start();
    let name = format!("{TAP_PREFIX}{id}");
    let tap = Tap::create(&name).map_err(VmError::from)?;
    let net_plan = crate::address::claim(id, &name, sandbox_container::net::GUEST_INTERFACE)?;
    let host_address = net_plan.gateway.unwrap_or(net_plan.address);
    let prefix_len = net_plan.prefix_len;
    let config = NetConfig {
        tap_name: name,
        host_address,
        prefix_len,
        guest_mac: guest_mac(id),
    };
    trace::step("net.tap", began, || {
        format!("{TAP_PREFIX}{id} host {host_address}/{prefix_len}")
    });
    Ok((tap, config, net_plan))
}

impl Backend for VmBackend {
    fn mode(&self) -> Mode {
        Mode::Vm
    }

    fn check(&mut self, request: &CreateRequest) -> Result<(), CoreError> {
        if !matches!(request.holding, Holding::Attached { .. }) {
            return Err(self.unsupported("a VM that outlives its launcher"));
        }
        let opts = self
            .opts
            .as_ref()
            .ok_or_else(|| CoreError::Internal("check called twice".into()))?;
        let plan = &request.assembled.plan;
        let began = trace::start();
        let checked = check(&plan.resources, &plan.volumes, opts)?;
        trace::step("checks", began, || {
            format!(
                "kernel {}, memory {} MiB, {} vCPU(s), KVM {:?}",
                checked.kernel.display(),
                checked.memory_mib,
                checked.vcpus,
                kvm_kind::detect()
            )
        });
        // From here on a stop signal must not kill the launcher before it has cleaned up; it is
        // taken between the steps below, or read by the VMM once the VM runs.
        self.signals = Some(StopSignals::block().map_err(|source| VmError::Io {
            what: "cannot block the stop signals for",
            path: PathBuf::from("the launcher"),
            source,
        })?);
        // The root disk is shared and cached: built before the sandbox's directory exists.
        let began = trace::start();
        let base = disks::root_disk(&self.image)?;
        trace::step("rootdisk.base", began, || {
            format!("{} (key {})", base.display(), disks::disk_key(&self.image))
        });
        self.checked = Some((checked, base));
        self.interrupted()
    }

    fn create(&mut self, request: &CreateRequest, dir: &SandboxDir) -> Result<Created, CoreError> {
        let opts = self
            .opts
            .take()
            .ok_or_else(|| CoreError::Internal("create called twice".into()))?;
        let (checked, base) = self
            .checked
            .take()
            .ok_or_else(|| CoreError::Internal("create before check".into()))?;
        let plan = &request.assembled.plan;
        let began = trace::start();
        let root = disks::writable_copy(&base, &dir.path().join("root.ext4"), &self.image.name)?;
        trace::step("rootdisk.copy", began, || {
            format!("{} ({:?})", root.path().display(), root.kind())
        });
        let mut disks = Vec::new();
        for (i, v) in plan.volumes.iter().enumerate() {
            let began = trace::start();
            let path = disks::volume_disk(std::path::Path::new(&v.source), dir.path(), i)?;
            trace::step("volume", began, || {
                format!("{} -> {} ({})", v.source, path.display(), v.target)
            });
            disks.push(DiskConfig {
                path,
                read_only: v.read_only,
            });
        }
        self.interrupted()?;
        let disks_ready_us = opts.started.elapsed().as_micros() as u64;

        let mut config = VmConfig::new(
            checked.kernel.clone(),
            DiskConfig {
                path: root.path().to_path_buf(),
                read_only: false,
            },
        );
        config.memory_mib = checked.memory_mib;
        config.vcpus = checked.vcpus;
        // --trace: the kernel's boot messages, timestamped, go to the trace (see console_filter).
        config.cmdline_extra = if opts.trace {
            format!("printk.time=1 {}", opts.cmdline_extra)
        } else {
            opts.cmdline_extra.clone()
        };
        config.disks = disks;
        config.verbose_kernel = opts.verbose_kernel || opts.trace;
        config.allow_pvm = checked.allow_pvm;
        config.started = opts.started;
        // `-t`: the console is the workload's terminal, relayed raw; `-i`: stdin reaches it.
        config.console_raw = plan.process.terminal;
        config.serial_input = matches!(request.holding, Holding::Attached { keep_stdin: true });
        let tracing = opts.trace;
        let filter = |w: Box<dyn std::io::Write + Send>| -> SerialSink {
            let f = ConsoleFilter::new(w);
            SerialSink::Writer(Box::new(if tracing { f.tracing_kernel_lines() } else { f }))
        };
        config.serial = match opts.serial {
            SerialSink::Stdout => filter(Box::new(std::io::stdout())),
            SerialSink::Writer(w) => filter(w),
            SerialSink::Null => SerialSink::Null,
        };
        let mut guest: Plan = plan.clone();
        guest.stdin = config.serial_input;
        // The plan disk comes before the volume disks: take its place first for the names.
        config.plan = Some(guest.clone());
        guest.volumes = plan
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| VolumePlan {
                source: config.extra_disk_device(i),
                target: v.target.clone(),
                read_only: v.read_only,
            })
            .collect();
        guest.ready = ReadyChannel::Port(exit_device::PORT);
        let mut link = None;
        if request.net == NetMode::Host {
            let (tap, net, net_plan) = tap(dir.id())?;
            link = Some(net.tap_name.clone());
            config.net = Some(net);
            config.tap = Some(tap);
            guest.net = Some(net_plan);
        }
        config.plan = Some(guest);
        // The guest agent's channel (`sandbox exec`, the OCI runtime's start, kill and stats).
        config.vsock = Some(VsockConfig {
            uds_path: dir.path().join(agent::VSOCK_SOCKET_NAME),
            guest_cid: GUEST_CID,
        });
        self.interrupted()?;
        self.prepared = Some(Prepared {
            config: Some(config),
            root,
            disks_ready_us,
            allow_pvm: checked.allow_pvm,
            memory_mib: checked.memory_mib,
        });
        self.opts = Some(VmOptions {
            keep_disk: opts.keep_disk,
            ..VmOptions::new()
        });
        Ok(Created {
            pid: std::process::id() as i32,
            rootfs: base.display().to_string(),
            link,
            ..Created::default()
        })
    }

    fn start(&mut self, _dir: &SandboxDir, _state: &State) -> Result<(), CoreError> {
        // The VMM is this process: the VM boots in `wait`.
        self.interrupted()
    }

    fn wait(&mut self, state: &State) -> Result<Outcome, CoreError> {
        let prepared = self
            .prepared
            .as_mut()
            .ok_or_else(|| CoreError::Internal("wait before create".into()))?;
        let config = prepared
            .config
            .take()
            .ok_or_else(|| CoreError::Internal("wait called twice".into()))?;
        let began = trace::start();
        let vm = sandbox_vmm::run(config).map_err(VmError::from)?;
        trace::step("vm", began, || {
            format!(
                "{:?}, boot {}, {:?}, console bytes dropped {}",
                vm.ending, vm.boot_protocol, vm.timings, vm.console_bytes_dropped
            )
        });
        let t = vm.timings;
        let timings: Vec<Timing> = [
            (phase::LAUNCHER_START, Some(0)),
            (vm_phase::DISKS_READY, Some(prepared.disks_ready_us)),
            (vm_phase::VM_BUILT, Some(t.vm_built_us)),
            (vm_phase::KERNEL_ENTRY, t.kernel_entry_us),
            (vm_phase::GUEST_INIT, t.init_started_us),
            (phase::READY, t.ready_us),
            (vm_phase::EXIT_REPORTED, t.exit_reported_us),
            (phase::EXIT, Some(t.ended_us)),
        ]
        .into_iter()
        .filter_map(|(phase, at)| {
            at.map(|micros| Timing {
                phase: phase.to_string(),
                micros,
            })
        })
        .collect();
        let outcome = Outcome {
            exit_status: vm.exit_status(),
            oom_killed: false,
            message: join_messages(
                vm.ending
                    .message()
                    .map(|m| with_pvm_hint(m, &vm.ending, prepared.allow_pvm)),
                (vm.console_bytes_dropped > 0).then(|| {
                    format!(
                        "{} bytes of the guest's console output were dropped: stdout did not keep \
                         up (a pipe nobody read?)",
                        vm.console_bytes_dropped
                    )
                }),
            ),
            timings,
            resources: ResourceFigures {
                memory_limit_bytes: Some(prepared.memory_mib << 20),
                ..ResourceFigures::default()
            },
        };
        self.last = Some(VmRun {
            outcome: outcome.clone(),
            kept_disk: None,
            vmm_rss_bytes: vm.vmm_rss_bytes_excluding_guest,
            boot_protocol: vm.boot_protocol,
            id: state.id.clone(),
        });
        Ok(outcome)
    }

    fn kill(&self, state: &State, signal: i32, _all: bool) -> Result<(), CoreError> {
        // The VMM takes SIGTERM/SIGINT as "stop the VM"; anything else goes to it as it is.
        let signal = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| CoreError::Bundle(format!("signal {signal} is not a signal of this system")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid), signal).map_err(|e| CoreError::Io {
            what: "cannot signal the VMM",
            path: PathBuf::from(format!("/proc/{}", state.pid)),
            source: e.into(),
        })
    }

    fn delete(&mut self, dir: SandboxDir, state: &State) -> Result<(), CoreError> {
        if let Some(prepared) = self.prepared.take() {
            let keep = self.opts.as_ref().is_some_and(|o| o.keep_disk);
            let kept = if keep {
                Some(disks::keep(prepared.root, &state.id)?)
            } else {
                drop(prepared.root);
                None
            };
            if let Some(run) = &mut self.last {
                run.kept_disk = kept;
            }
            // The tap went with the VMM's descriptor.
        }
        dir.remove()?;
        self.signals = None;
        Ok(())
    }
}

/// A kernel tried on a PVM host (`--kernel`) that failed the way a standard kernel fails there
/// gets the reason added to its crash message.
fn with_pvm_hint(message: String, ending: &sandbox_vmm::Ending, allow_pvm: bool) -> String {
    let failed_early = matches!(
        ending,
        sandbox_vmm::Ending::VcpuFailure { .. } | sandbox_vmm::Ending::TripleFault { .. }
    );
    if allow_pvm && failed_early && kvm_kind::detect() == kvm_kind::KvmKind::Pvm {
        // The hint joins the first line; the console lines (if any) stay after it.
        let (head, rest) = message.split_at(message.find('\n').unwrap_or(message.len()));
        format!(
            "{head} (this host's /dev/kvm is PVM: unless --kernel is PVM-enabled it cannot run here; \
             use `sandbox lab -- run --mode vm ...`){rest}"
        )
    } else {
        message
    }
}

/// Two optional messages as one (either, both on one line, or none).
fn join_messages(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_macs_are_local_unicast_and_differ_by_id() {
        let a = guest_mac("0000abcd");
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, unicast");
        assert_ne!(a, guest_mac("0000abce"));
    }
}
