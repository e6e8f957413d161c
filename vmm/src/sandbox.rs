//! `sandbox run --mode vm`: a [`SandboxSpec`] and a resolved image in, an [`Outcome`] out — the
//! VM counterpart of `sandbox_container::run`.
//!
//! What can be refused is refused before anything is created: the flags VM mode cannot honour,
//! the guest kernel (`--kernel`, else the built one from `sandbox_kernel::cached()`; never built
//! here — that takes minutes — the error says `sandbox kernel build`), memory and vCPUs against
//! the kernel and the host, and the host's KVM (a PVM host is refused unless `--kernel` names a
//! kernel to try on it). Then, each piece owned by a value that removes it when dropped:
//! - the run directory `$SANDBOX_HOME/run/<id>` (container mode's [`RunDir`], with `owner.pid`,
//!   so `sandbox gc` removes it, disks included, when the VMM was killed);
//! - the image's root disk, built once per content key (`build_base`, cached under
//!   `$SANDBOX_CACHE/disks`) from the image flattened into a temporary directory, and the
//!   per-VM writable copy `run/<id>/root.ext4` (moved to `$SANDBOX_HOME/disks/vm-<id>.ext4`
//!   with `--keep-disk`);
//! - one ext4 image per directory volume in the run directory (a snapshot: writes in the VM do
//!   not reach the host directory); a volume that is an image file is attached as it is;
//! - `--net host`: the tap `sbxt<id>`, whose host end gets a /30 from container mode's allocator
//!   ([`sandbox_container::net::claim_host_address`]); it vanishes with the VMM's descriptor.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sandbox_container::rundir::RunDir;
use sandbox_container::ContainerError;
use sandbox_disk::{DiskError, VmDisk};
use sandbox_image::{ImageError, ResolvedImage};
use sandbox_protocol::{exit_device, Mode, Plan, ReadyChannel, VolumePlan};
use sandbox_spec::{phase, NetMode, Outcome, ResourceFigures, SandboxSpec, Timing};

use crate::console_filter::ConsoleFilter;
use crate::stop_signals::StopSignals;
use crate::tap::Tap;
use crate::{boot, check_host, kvm_kind, validate, DiskConfig, HostLimits, NetConfig, SerialSink, VmConfig};
use sandbox_protocol::trace;

/// The guest memory when `--memory` is not given.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// The prefix of a VM's tap name (`sbxt<id>`; container veths are `sbx<id>`).
pub const TAP_PREFIX: &str = "sbxt";
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

/// What VM mode needs beyond the [`SandboxSpec`].
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
    /// Where the guest console goes (the workload's output): normally stdout. The kernel's
    /// farewell line is filtered out ([`crate::console_filter`]).
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
pub enum SandboxVmError {
    #[error("the guest kernel is not built: run `sandbox kernel build` once (about 3 to 7 minutes), or pass a kernel with --kernel")]
    KernelNotBuilt,
    #[error("--kernel {}: no such file: pass the path of a bzImage or vmlinux", .0.display())]
    KernelMissing(PathBuf),
    #[error("--cpus {0}: a VM gets whole vCPUs: pass a whole number such as 1 or 2")]
    FractionalCpus(f64),
    #[error("--memory {0} bytes is not a whole number of MiB: give the size in MiB, e.g. 256M")]
    MemoryNotMib(u64),
    #[error("{flag} is not available in VM mode: {remedy}")]
    Unsupported {
        flag: &'static str,
        remedy: &'static str,
    },
    #[error("volume {}: {why}", host.display())]
    Volume { host: PathBuf, why: String },
    #[error("image {image:?} names its user {user:?}, which sandbox cannot look up: pass --user UID:GID")]
    ImageUser { image: String, user: String },
    #[error(transparent)]
    Vmm(#[from] crate::VmmError),
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
    #[error(transparent)]
    RunDir(#[from] ContainerError),
    #[error("--net host: {0}")]
    Net(#[from] sandbox_container::net::NetError),
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

impl SandboxVmError {
    /// The status the CLI exits with for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            SandboxVmError::Interrupted(signal) => 128 + signal,
            _ => LAUNCH_FAILURE_STATUS,
        }
    }
}

/// The kernel to boot: `--kernel`, else the built guest kernel's vmlinux (PVH entry).
pub fn resolve_kernel(requested: Option<&Path>) -> Result<PathBuf, SandboxVmError> {
    match requested {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) => Err(SandboxVmError::KernelMissing(p.to_path_buf())),
        None => sandbox_kernel::cached()
            .map(|k| k.vmlinux)
            .ok_or(SandboxVmError::KernelNotBuilt),
    }
}

/// The guest memory in MiB for `--memory` (default [`DEFAULT_MEMORY_MIB`]).
pub fn memory_mib(memory_bytes: Option<u64>) -> Result<u64, SandboxVmError> {
    match memory_bytes {
        None => Ok(DEFAULT_MEMORY_MIB),
        Some(b) if b % (1 << 20) == 0 && b > 0 => Ok(b >> 20),
        Some(b) => Err(SandboxVmError::MemoryNotMib(b)),
    }
}

/// The vCPU count for `--cpus` (default 1): whole numbers only.
pub fn vcpus(cpus: Option<f64>) -> Result<u32, SandboxVmError> {
    match cpus {
        None => Ok(1),
        Some(c) if c.fract() == 0.0 && (1.0..=1024.0).contains(&c) => Ok(c as u32),
        Some(c) => Err(SandboxVmError::FractionalCpus(c)),
    }
}

/// The flags VM mode cannot honour.
fn check_spec(spec: &SandboxSpec) -> Result<(), SandboxVmError> {
    if spec.resources.pids.is_some() {
        return Err(SandboxVmError::Unsupported {
            flag: "--pids",
            remedy: "the guest kernel has no limit to set; drop --pids or use --mode container",
        });
    }
    for v in &spec.volumes {
        if !v.host.is_absolute() || !(v.host.is_dir() || v.host.is_file()) {
            return Err(SandboxVmError::Volume {
                host: v.host.clone(),
                why: "not an existing directory or disk image file: create it, or fix --volume".into(),
            });
        }
    }
    Ok(())
}

/// The disk-cache key of an image's root file system (`content_key` made a file name).
fn disk_key(image: &ResolvedImage) -> String {
    image.content_key().replace(':', "-")
}

/// The cached root disk of `image`, built (from the image flattened into a temporary directory
/// that is removed again) when missing.
fn root_disk(image: &ResolvedImage) -> Result<PathBuf, SandboxVmError> {
    let key = disk_key(image);
    let cache = sandbox_disk::disk_cache();
    let cached = cache.join(format!("{key}.ext4"));
    if cached.is_file() {
        return Ok(cached);
    }
    let disk_err = |source| SandboxVmError::RootDisk {
        image: image.name.clone(),
        source,
    };
    fs::create_dir_all(&cache).map_err(|source| SandboxVmError::Io {
        what: "cannot create the disk cache",
        path: cache.clone(),
        source,
    })?;
    let tree = tempfile::Builder::new()
        .prefix(".flatten-")
        .tempdir_in(&cache)
        .map_err(|source| SandboxVmError::Io {
            what: "cannot create a temporary directory in",
            path: cache.clone(),
            source,
        })?;
    image
        .flatten_into(tree.path())
        .map_err(|source| SandboxVmError::Image {
            image: image.name.clone(),
            source,
        })?;
    eprintln!("building the root disk of image {:?}...", image.name);
    sandbox_disk::build_base(tree.path(), &key).map_err(disk_err)
}

/// The argv init runs: empty (the guest program's `info`) without a command, else the image's
/// entrypoint followed by the command — as in container mode.
fn command_argv(spec: &SandboxSpec, image: &ResolvedImage) -> Vec<String> {
    if spec.command.is_empty() {
        return Vec::new();
    }
    image
        .config
        .entrypoint
        .iter()
        .chain(spec.command.iter())
        .cloned()
        .collect()
}

fn user_of(spec: &SandboxSpec, image: &ResolvedImage) -> Result<Option<(u32, u32)>, SandboxVmError> {
    match (&spec.user, &image.config.user) {
        (Some(u), _) => Ok(Some(*u)),
        (None, None) => Ok(None),
        (None, Some(u)) if u.is_empty() => Ok(None),
        (None, Some(u)) => SandboxSpec::parse_user(u)
            .map(Some)
            .map_err(|_| SandboxVmError::ImageUser {
                image: image.name.clone(),
                user: u.clone(),
            }),
    }
}

/// The guest MAC of sandbox `id` (locally administered, derived from the id).
fn guest_mac(id: &str) -> [u8; 6] {
    let mut mac = [0x02, 0x53, 0x42, 0, 0, 0];
    let n = u32::from_str_radix(id, 16).unwrap_or(0).to_be_bytes();
    mac[3..].copy_from_slice(&n[1..]);
    mac
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

/// Everything that can be refused before any work: flags VM mode cannot honour, the kernel
/// (found, a bzImage or ELF), memory and vCPUs against it and the host, and the host's KVM.
/// [`run_sandbox`] calls it first; the CLI calls it before it even resolves the image.
pub fn check(spec: &SandboxSpec, opts: &VmOptions) -> Result<Checked, SandboxVmError> {
    check_spec(spec)?;
    let memory_mib = memory_mib(spec.resources.memory_bytes)?;
    let vcpus = vcpus(spec.resources.cpus)?;
    let kernel_path = resolve_kernel(opts.kernel.as_deref())?;
    let kernel = boot::loader::inspect(&kernel_path)?;
    let allow_pvm = opts.kernel.is_some();
    let probe = VmConfig {
        memory_mib,
        vcpus,
        plan: Some(Plan::new(Mode::Vm, Vec::new())),
        disks: spec
            .volumes
            .iter()
            .map(|v| DiskConfig {
                path: v.host.clone(),
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

/// Runs `spec` in a microVM booted from `image`'s root disk.
pub fn run_sandbox(
    spec: &SandboxSpec,
    image: &ResolvedImage,
    opts: VmOptions,
) -> Result<VmRun, SandboxVmError> {
    if spec.trace {
        // The shared `trace +µs step: values (duration)` lines, from the launcher's start.
        let elapsed = opts.started.elapsed().as_nanos() as u64;
        trace::enable(sandbox_container::now_ns().saturating_sub(elapsed));
    }
    // Refusals first: nothing exists yet.
    let began = trace::start();
    let checked = check(spec, &opts)?;
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
    let signals = StopSignals::block().map_err(|source| SandboxVmError::Io {
        what: "cannot block the stop signals for",
        path: PathBuf::from("the launcher"),
        source,
    })?;
    let interrupted = || match signals.take_pending() {
        Some(signal) => Err(SandboxVmError::Interrupted(signal as i32)),
        None => Ok(()),
    };
    let user = user_of(spec, image)?;
    let (memory_mib, vcpus, kernel_path, allow_pvm) = (
        checked.memory_mib,
        checked.vcpus,
        checked.kernel,
        checked.allow_pvm,
    );

    // The root disk is shared and cached: built before the run directory exists.
    let began = trace::start();
    let base = root_disk(image)?;
    trace::step("rootdisk.base", began, || {
        format!("{} (key {})", base.display(), disk_key(image))
    });
    interrupted()?;
    let began = trace::start();
    let run_dir = RunDir::create()?;
    let id = run_dir.id().to_string();
    trace::step("rundir", began, || format!("{}", run_dir.path().display()));
    let began = trace::start();
    let root = VmDisk::create(&base, &run_dir.path().join("root.ext4")).map_err(|source| {
        SandboxVmError::RootDisk {
            image: image.name.clone(),
            source,
        }
    })?;
    trace::step("rootdisk.copy", began, || {
        format!("{} ({:?})", root.path().display(), root.kind())
    });
    let mut disks = Vec::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let began = trace::start();
        let path = if v.host.is_dir() {
            let dest = run_dir.path().join(format!("volume-{i}.ext4"));
            eprintln!("making an ext4 image of volume {}...", v.host.display());
            sandbox_disk::build_volume_from_dir(&v.host, &dest).map_err(|source| {
                SandboxVmError::VolumeDisk {
                    host: v.host.clone(),
                    source,
                }
            })?;
            dest
        } else {
            v.host.clone()
        };
        trace::step("volume", began, || {
            format!("{} -> {} ({})", v.host.display(), path.display(), v.guest)
        });
        disks.push(DiskConfig {
            path,
            read_only: v.read_only,
        });
    }
    interrupted()?;
    let disks_ready_us = opts.started.elapsed().as_micros() as u64;

    let mut config = VmConfig::new(
        kernel_path,
        DiskConfig {
            path: root.path().to_path_buf(),
            read_only: false,
        },
    );
    config.memory_mib = memory_mib;
    config.vcpus = vcpus;
    // --trace: the kernel's boot messages, timestamped, go to the trace (see console_filter).
    config.cmdline_extra = if spec.trace {
        format!("printk.time=1 {}", opts.cmdline_extra)
    } else {
        opts.cmdline_extra.clone()
    };
    config.disks = disks;
    config.verbose_kernel = opts.verbose_kernel || spec.trace;
    config.allow_pvm = allow_pvm;
    config.started = opts.started;
    let filter = |w: Box<dyn std::io::Write + Send>| -> SerialSink {
        let f = ConsoleFilter::new(w);
        SerialSink::Writer(Box::new(if spec.trace { f.tracing_kernel_lines() } else { f }))
    };
    config.serial = match opts.serial {
        SerialSink::Stdout => filter(Box::new(std::io::stdout())),
        SerialSink::Writer(w) => filter(w),
        SerialSink::Null => SerialSink::Null,
    };
    let mut plan = Plan::new(Mode::Vm, command_argv(spec, image));
    config.plan = Some(plan.clone());
    plan.env = image
        .config
        .env
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .chain(spec.env.iter().cloned())
        .collect();
    plan.hostname = Some(spec.hostname.clone().unwrap_or_else(|| format!("sbx-{id}")));
    plan.workdir = spec.workdir.clone().or_else(|| image.config.working_dir.clone());
    plan.user = user;
    plan.volumes = spec
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| VolumePlan {
            source: config.extra_disk_device(i),
            target: v.guest.clone(),
            read_only: v.read_only,
        })
        .collect();
    plan.ready = ReadyChannel::Port(exit_device::PORT);
    if spec.net == NetMode::Host {
        let began = trace::start();
        let name = format!("{TAP_PREFIX}{id}");
        let tap = Tap::create(&name)?;
        let net_plan = sandbox_container::net::claim_host_address(&id, &name)?;
        let host_address = net_plan.gateway.unwrap_or(net_plan.address);
        let prefix_len = net_plan.prefix_len;
        config.net = Some(NetConfig {
            tap_name: name,
            host_address,
            prefix_len,
            guest_mac: guest_mac(&id),
        });
        config.tap = Some(tap);
        plan.net = Some(net_plan);
        trace::step("net.tap", began, || {
            format!("{TAP_PREFIX}{id} host {host_address}/{prefix_len}")
        });
    }
    config.plan = Some(plan);

    interrupted()?;
    let began = trace::start();
    let vm = crate::run(config)?;
    trace::step("vm", began, || {
        format!("{:?}, boot {}, {:?}", vm.ending, vm.boot_protocol, vm.timings)
    });
    let kept_disk = if opts.keep_disk {
        Some(keep(root, &id)?)
    } else {
        drop(root);
        None
    };
    drop(run_dir);

    let t = vm.timings;
    let mut timings = vec![
        (phase::LAUNCHER_START, Some(0)),
        (vm_phase::DISKS_READY, Some(disks_ready_us)),
        (vm_phase::VM_BUILT, Some(t.vm_built_us)),
        (vm_phase::KERNEL_ENTRY, t.kernel_entry_us),
        (vm_phase::GUEST_INIT, t.init_started_us),
        (phase::READY, t.ready_us),
        (vm_phase::EXIT_REPORTED, t.exit_reported_us),
        (phase::EXIT, Some(t.ended_us)),
    ];
    timings.retain(|(_, at)| at.is_some());
    Ok(VmRun {
        outcome: Outcome {
            exit_status: vm.exit_status(),
            oom_killed: false,
            message: vm
                .ending
                .message()
                .map(|m| with_pvm_hint(m, &vm.ending, allow_pvm)),
            timings: timings
                .into_iter()
                .map(|(phase, at)| Timing {
                    phase: phase.to_string(),
                    micros: at.unwrap_or(0),
                })
                .collect(),
            resources: ResourceFigures {
                memory_limit_bytes: Some(memory_mib << 20),
                ..ResourceFigures::default()
            },
        },
        kept_disk,
        vmm_rss_bytes: vm.vmm_rss_bytes_excluding_guest,
        boot_protocol: vm.boot_protocol,
        id,
    })
}

/// A kernel tried on a PVM host (`--kernel`) that failed the way a standard kernel fails there
/// gets the reason added to its crash message.
fn with_pvm_hint(message: String, ending: &crate::Ending, allow_pvm: bool) -> String {
    let failed_early = matches!(
        ending,
        crate::Ending::VcpuFailure { .. } | crate::Ending::TripleFault { .. }
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

/// Where `--keep-disk` puts per-VM root disks: `$SANDBOX_HOME/disks`.
pub fn kept_disk_dir() -> PathBuf {
    sandbox_protocol::paths::sandbox_home().join("disks")
}

/// Moves the per-VM disk out of the run directory (which is about to go) and keeps it.
fn keep(root: VmDisk, id: &str) -> Result<PathBuf, SandboxVmError> {
    let dir = kept_disk_dir();
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxVmError::Io { what, path, source }
    };
    fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
    let dest = dir.join(format!("vm-{id}.ext4"));
    fs::rename(root.path(), &dest).map_err(io("cannot move the per-VM disk to", &dest))?;
    // The file left `root`'s path; dropping it now removes nothing.
    root.keep();
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_cpus_map_to_whole_mib_and_vcpus() {
        assert_eq!(memory_mib(None).unwrap(), DEFAULT_MEMORY_MIB);
        assert_eq!(memory_mib(Some(256 << 20)).unwrap(), 256);
        assert!(matches!(
            memory_mib(Some((1 << 20) + 1)),
            Err(SandboxVmError::MemoryNotMib(_))
        ));
        assert_eq!(vcpus(None).unwrap(), 1);
        assert_eq!(vcpus(Some(2.0)).unwrap(), 2);
        let err = vcpus(Some(0.5)).unwrap_err();
        assert!(err.to_string().contains("whole number"), "{err}");
    }

    #[test]
    fn pids_and_missing_volumes_are_refused_with_the_flag() {
        let mut spec = SandboxSpec::default();
        spec.resources.pids = Some(10);
        let err = check_spec(&spec).unwrap_err();
        assert!(err.to_string().contains("--pids"), "{err}");
        let mut spec = SandboxSpec::default();
        spec.volumes.push("/nonexistent-volume:/data".parse().unwrap());
        let err = check_spec(&spec).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-volume"), "{err}");
    }

    #[test]
    fn a_missing_kernel_file_is_named() {
        let err = resolve_kernel(Some(Path::new("/nonexistent/vmlinux"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }

    #[test]
    fn guest_macs_are_local_unicast_and_differ_by_id() {
        let a = guest_mac("0000abcd");
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, unicast");
        assert_ne!(a, guest_mac("0000abce"));
    }
}
