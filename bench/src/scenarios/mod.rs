//! The scenarios, one file each; every one measures this project's modes, the host natively
//! where that is the baseline, and the peers where they apply.

pub mod boot;
pub mod compute;
pub mod density;
pub mod disk;
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
        Scenario::Disk => disk::run(bench),
        Scenario::Net => net::run(bench),
        Scenario::Cpu | Scenario::Syscall => compute::run(bench, scenario),
    }
}

/// `sandbox run --mode MODE --image IMAGE -- command` for this bench.
pub fn sandbox(bench: &Bench, mode: Mode, command: &[&str]) -> SandboxCommand {
    SandboxCommand::new(&bench.config.sandbox_bin, mode, &bench.config.image, command)
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
