//! The scenarios, one file each; every one measures this project's modes, the host natively
//! where that is the baseline, and the peers where they apply.

pub mod boot;
pub mod compute;
pub mod density;
pub mod disk;
pub mod exec;
pub mod memory;
pub mod net;

use crate::config::{Mode, Scenario};
use crate::peers::Peers;
use crate::process::SandboxCommand;
use crate::runner::Bench;
use std::time::Duration;

/// Runs one scenario.
pub fn run(bench: &mut Bench, peers: &mut Peers, scenario: Scenario) {
    match scenario {
        Scenario::Boot => boot::run(bench, peers),
        Scenario::Memory => memory::run(bench, peers),
        Scenario::Density => density::run(bench),
        Scenario::Disk => disk::run(bench, peers),
        Scenario::Net => net::run(bench, peers),
        Scenario::Exec => exec::run(bench, peers),
        Scenario::Cpu | Scenario::Syscall => compute::run(bench, peers, scenario),
    }
}

/// `sandbox run --mode MODE --image IMAGE -- command` for this bench.
pub fn sandbox(bench: &Bench, mode: Mode, command: &[&str]) -> SandboxCommand {
    SandboxCommand::new(&bench.config.sandbox_bin, mode, &bench.config.image, command)
}

/// Records `cmd`'s command line for `scenario` under `subject` (a mode, or `MODE/VARIANT`),
/// with the mode's configuration.
pub fn record(bench: &mut Bench, subject: &str, scenario: Scenario, purpose: &str, cmd: &SandboxCommand) {
    let mode = cmd.mode;
    let name = mode.name();
    let fresh = !bench.subjects.iter().any(|s| s.subject == name);
    let s = bench.subject(name, mode_description(mode));
    let purpose = if subject == name {
        purpose.to_string()
    } else {
        format!("{purpose} ({subject})")
    };
    s.command(scenario, &purpose, cmd.argv());
    if fresh {
        describe_mode(s, mode);
    }
}

/// Records the command line of a native run of the guest program for `scenario`.
pub fn record_native(bench: &mut Bench, scenario: Scenario, args: &[&str]) {
    let bin = sandbox_protocol::paths::guest_binary().unwrap_or_else(|_| "sandbox-guest".into());
    let argv = std::iter::once(bin.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect();
    bench
        .subject(
            "native",
            "the same workload run directly on the machine the bench runs on (in the lab: L1), no sandbox",
        )
        .command(scenario, "workload", argv);
}

fn mode_description(mode: Mode) -> &'static str {
    match mode {
        Mode::Container => "this project's container mode: sandbox-guest init as PID 1 in new namespaces on an overlayfs of the image, Docker's default capabilities and seccomp profile, cgroup limits",
        Mode::Vm => "this project's VM mode: its own VMM in the launcher process, the guest kernel's vmlinux, a per-VM copy of the image's root disk, the plan on a read-only plan disk, sandbox-guest init as init",
    }
}

fn describe_mode(s: &mut crate::report::SubjectSetup, mode: Mode) {
    if mode != Mode::Vm {
        return;
    }
    use sandbox_vmm::boot::cmdline::{build, CmdlineSpec};
    use sandbox_vmm::layout::{virtio_irq, virtio_mmio_base};
    let spec = CmdlineSpec {
        root_read_only: false,
        virtio_devices: (0..2).map(|i| (virtio_mmio_base(i), virtio_irq(i))).collect(),
        plan_device: Some(sandbox_vmm::disk_device_name(1)),
        verbose: false,
        extra: String::new(),
    };
    let line = build(&spec)
        .ok()
        .and_then(|c| c.as_cstring().ok())
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| "(could not be built)".into());
    s.set(
        "kernel command line",
        format!("{line} (the VMM's own builder, for a VM with a root and a plan disk; volumes and --net host add devices)"),
    );
    let kernel = sandbox_kernel::cached()
        .map(|k| format!("{} (PVH entry)", k.vmlinux.display()))
        .unwrap_or_else(|| "not built".into());
    s.set("kernel", kernel);
    s.set(
        "machine",
        format!(
            "{} MiB, 1 vCPU; serial port, i8042 (reset only), boot/exit port 0x4f0, virtio-mmio devices",
            sandbox_core::vm::DEFAULT_MEMORY_MIB
        ),
    );
    s.set(
        "ready signal",
        "sandbox-guest ready: a write to port 0x4f0 (the VMM timestamps it: ready_ms), then its JSON line on ttyS0 (the harness times it: ready_wall_ms)",
    );
}

/// How long a sandbox may take to say ready: VMs in the lab boot under emulation.
pub fn ready_timeout(mode: Mode) -> Duration {
    match mode {
        Mode::Container => Duration::from_secs(60),
        Mode::Vm => Duration::from_secs(180),
    }
}

/// The workload a held sandbox runs: ready, then wait to be terminated.
pub const HOLD: &[&str] = &["sh", "-c", "sandbox-guest ready && exec sleep 600"];
