//! memory: what one idle sandbox costs the host, sampled once its workload said ready. For
//! every subject, the same figure: `host_pss_mib`, the PSS of every host process the sandbox is
//! made of (launcher or runtime, VMM or Sentry and gofer, the workload; a VM's guest RAM as far
//! as the guest touched it). As the breakdown: container — the launcher's RSS/PSS and the
//! cgroup's memory peak; VM and QEMU — the VMM's RSS/PSS beyond guest RAM (the process tree
//! minus the contiguous mappings spanning the VM's memory size) and the guest RAM touched.

use super::{ready_timeout, record, sandbox, HOLD};
use crate::config::{Mode, Peer, Scenario};
use crate::error::BenchError;
use crate::peers::{hold_env, Peers, QemuWork, HOLD_ARGS};
use crate::process::{is_ready_result, mib, process_tree, Memory};
use crate::runner::{Bench, Sample};
use std::time::Duration;

pub fn run(bench: &mut Bench, peers: &mut Peers) {
    for mode in bench.modes() {
        let cmd = sandbox(bench, mode, HOLD);
        record(bench, mode.name(), Scenario::Memory, "hold", &cmd);
        bench.series(Scenario::Memory, mode.name(), |_| {
            let mut held = cmd.spawn()?;
            held.wait_ready(is_ready_result, ready_timeout(mode))?;
            let memory = tree_memory(held.pid(), mode)?;
            let whole = tree_memory(held.pid(), Mode::Vm)?;
            let finished = held.terminate(Duration::from_secs(15))?;
            let mut samples = vec![Sample::lower("host_pss_mib", "MiB", mib(whole.pss))];
            samples.extend(samples_for(mode, &memory));
            if let Some(peak) = finished.outcome.and_then(|o| o.resources.memory_peak_bytes) {
                samples.push(Sample::lower("cgroup_memory_peak_mib", "MiB", mib(peak)));
            }
            Ok(samples)
        });
    }
    for peer in [Peer::Crun, Peer::Runc, Peer::Runsc] {
        if !peers.usable(bench, peer, Scenario::Memory) {
            continue;
        }
        let run = match peers.oci_setup(bench, Scenario::Memory, peer, "hold", Some(HOLD_ARGS), hold_env) {
            Ok(r) => r,
            Err(e) => {
                bench.fail(Scenario::Memory, peer.name(), &e);
                continue;
            }
        };
        bench.series(Scenario::Memory, peer.name(), |_| {
            let hold = peers.oci_hold(&run)?;
            let whole = tree_memory(hold.held.pid(), Mode::Vm)?;
            drop(hold);
            Ok(vec![Sample::lower("host_pss_mib", "MiB", mib(whole.pss))])
        });
    }
    for peer in [Peer::QemuMicrovm, Peer::QemuMicrovmDefault] {
        if !peers.usable(bench, peer, Scenario::Memory) {
            continue;
        }
        peers.qemu_describe(bench, peer, Scenario::Memory, QemuWork::Hold);
        bench.series(Scenario::Memory, peer.name(), |_| {
            let memory = peers.qemu_memory(peer)?;
            let mut samples = vec![Sample::lower("host_pss_mib", "MiB", mib(memory.pss))];
            samples.extend(samples_for(Mode::Vm, &memory));
            Ok(samples)
        });
    }
}

/// The memory of `pid`: a container launcher alone (the workload is in the cgroup figure); with
/// `Mode::Vm`, `pid` with every process it started (a VMM's guest RAM set apart).
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
