//! memory: what one idle sandbox costs the host. Container: the launcher's RSS/PSS plus the
//! cgroup's memory peak. VM: the VMM's RSS/PSS beyond guest RAM (the process tree minus the
//! guest memory: the contiguous mappings spanning the VM's memory size) and the guest RAM
//! actually touched. QEMU microvm the same
//! way, on the same kernel and root disk.

use super::{ready_timeout, sandbox, HOLD};
use crate::config::{Mode, Peer, Scenario};
use crate::error::BenchError;
use crate::peers::Peers;
use crate::process::{is_ready_result, mib, process_tree, Memory};
use crate::runner::{Bench, Sample};
use std::time::Duration;

pub fn run(bench: &mut Bench, peers: &mut Peers) {
    for mode in bench.modes() {
        let cmd = sandbox(bench, mode, HOLD);
        bench.series(Scenario::Memory, mode.name(), |_| {
            let mut held = cmd.spawn()?;
            held.wait_ready(is_ready_result, ready_timeout(mode))?;
            let memory = tree_memory(held.pid(), mode)?;
            let finished = held.terminate(Duration::from_secs(15))?;
            let mut samples = samples_for(mode, &memory);
            if let Some(peak) = finished.outcome.and_then(|o| o.resources.memory_peak_bytes) {
                samples.push(Sample::lower("cgroup_memory_peak_mib", "MiB", mib(peak)));
            }
            Ok(samples)
        });
    }
    if peers.usable(bench, Peer::QemuMicrovm) {
        bench.series(Scenario::Memory, Peer::QemuMicrovm.name(), |_| {
            let memory = peers.qemu_memory()?;
            Ok(samples_for(Mode::Vm, &memory))
        });
    }
}

/// The memory of `pid`: a container launcher alone (the workload is in the cgroup figure), a
/// VMM with every process it started.
pub fn tree_memory(pid: u32, mode: Mode) -> Result<Memory, BenchError> {
    let pids = match mode {
        Mode::Container => vec![pid],
        Mode::Vm => process_tree(pid),
    };
    // The bench runs VMs at the default memory size.
    let guest_ram = (mode == Mode::Vm).then_some(sandbox_core::vm::DEFAULT_MEMORY_MIB << 20);
    let mut total = Memory::default();
    for (i, p) in pids.into_iter().enumerate() {
        let m = match Memory::of(p, guest_ram) {
            Ok(m) => m,
            Err(e) if i == 0 => return Err(e),
            Err(_) => continue, // a helper that ended meanwhile
        };
        total.rss += m.rss;
        total.pss += m.pss;
        if m.guest_size > total.guest_size {
            total.guest_size = m.guest_size;
            total.guest_rss = m.guest_rss;
            total.guest_pss = m.guest_pss;
        }
    }
    Ok(total)
}

fn samples_for(mode: Mode, m: &Memory) -> Vec<Sample> {
    match mode {
        Mode::Container => vec![
            Sample::lower("launcher_rss_mib", "MiB", mib(m.rss)),
            Sample::lower("launcher_pss_mib", "MiB", mib(m.pss)),
        ],
        Mode::Vm => vec![
            Sample::lower(
                "vmm_overhead_rss_mib",
                "MiB",
                mib(m.rss.saturating_sub(m.guest_rss)),
            ),
            Sample::lower(
                "vmm_overhead_pss_mib",
                "MiB",
                mib(m.pss.saturating_sub(m.guest_pss)),
            ),
            Sample::lower("guest_ram_touched_mib", "MiB", mib(m.guest_rss)),
            Sample::lower("guest_ram_size_mib", "MiB", mib(m.guest_size)),
        ],
    }
}
