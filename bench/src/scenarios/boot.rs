//! boot: each subject's launch, measured the same way for all — the harness's wall clock from
//! spawn to the workload's `ready` line on the subject's stdout (`ready_wall_ms`: our modes and
//! both QEMU configurations, all running `sandbox-guest ready` under `sandbox-guest init` with
//! the same plan), to its exit (`wall_ms`), and from spawn to the exit of a `true` run
//! (`true_wall_ms`: every subject, the only figure the OCI runtimes have). Our modes add the
//! launcher's own phases as the breakdown (`ready_ms`, `phase_*_ms`: container namespaces,
//! rootfs, exec; VM disks, VMM set-up, kernel, init).

use super::{ready_timeout, record, sandbox};
use crate::config::{Peer, Scenario};
use crate::error::BenchError;
use crate::peers::{Peers, QemuWork};
use crate::process::{is_ready_result, ms, RUN_TIMEOUT};
use crate::runner::{Bench, Sample};
use sandbox_spec::{phase, Outcome};

pub fn run(bench: &mut Bench, peers: &mut Peers) {
    for mode in bench.modes() {
        let cmd = sandbox(bench, mode, &["sandbox-guest", "ready"]);
        let true_cmd = sandbox(bench, mode, &["true"]);
        record(bench, mode.name(), Scenario::Boot, "ready", &cmd);
        record(bench, mode.name(), Scenario::Boot, "true", &true_cmd);
        bench.series(Scenario::Boot, mode.name(), |_| {
            let what = format!("{mode} boot");
            let mut held = cmd.spawn()?;
            let ready_wall = held.wait_ready(is_ready_result, ready_timeout(mode))?;
            let f = held.finish_within(RUN_TIMEOUT)?.check(&what)?;
            let outcome = f
                .outcome
                .as_ref()
                .ok_or_else(|| BenchError::run(&what, "the launcher wrote no --outcome JSON"))?;
            let mut samples = phase_samples(outcome)
                .ok_or_else(|| BenchError::run(&what, "the outcome has no `ready` phase"))?;
            samples.push(Sample::lower("ready_wall_ms", "ms", ms(ready_wall)));
            samples.push(Sample::lower("wall_ms", "ms", ms(f.wall)));
            let t = true_cmd.run()?.check(&format!("{mode} true"))?;
            samples.push(Sample::lower("true_wall_ms", "ms", ms(t.wall)));
            Ok(samples)
        });
    }
    for peer in [Peer::SandboxRuntime, Peer::Crun, Peer::Runc, Peer::Runsc] {
        if !peers.usable(bench, peer, Scenario::Boot) {
            continue;
        }
        let run = match peers.oci_setup(bench, Scenario::Boot, peer, "true", None, |_| {}) {
            Ok(r) => r,
            Err(e) => {
                bench.fail(Scenario::Boot, peer.name(), &e);
                continue;
            }
        };
        bench.series(Scenario::Boot, peer.name(), |_| {
            let wall = peers.oci_run(&run)?.wall;
            Ok(vec![Sample::lower("true_wall_ms", "ms", ms(wall))])
        });
    }
    for peer in [Peer::QemuMicrovm, Peer::QemuMicrovmDefault] {
        if !peers.usable(bench, peer, Scenario::Boot) {
            continue;
        }
        peers.qemu_describe(bench, peer, Scenario::Boot, QemuWork::Ready);
        peers.qemu_describe(bench, peer, Scenario::Boot, QemuWork::True);
        bench.series(Scenario::Boot, peer.name(), |_| {
            let (ready, wall) = peers.qemu_boot(peer)?;
            let t = peers.qemu_true(peer)?;
            Ok(vec![
                Sample::lower("ready_wall_ms", "ms", ms(ready)),
                Sample::lower("wall_ms", "ms", ms(wall)),
                Sample::lower("true_wall_ms", "ms", ms(t)),
            ])
        });
    }
}

/// `ready_ms` and each phase's share (`phase_<name>_ms`: from the previous phase to it) up to
/// `ready`; `None` when the outcome never reached ready.
pub fn phase_samples(outcome: &Outcome) -> Option<Vec<Sample>> {
    let ready = outcome.timing(phase::READY)?;
    let mut samples = vec![Sample::lower("ready_ms", "ms", ready as f64 / 1000.0)];
    let mut previous = 0u64;
    for t in &outcome.timings {
        if t.phase == phase::LAUNCHER_START {
            continue;
        }
        samples.push(Sample::lower(
            format!("phase_{}_ms", t.phase.replace('-', "_")),
            "ms",
            t.micros.saturating_sub(previous) as f64 / 1000.0,
        ));
        previous = t.micros;
        if t.phase == phase::READY {
            break;
        }
    }
    Some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_spec::{ResourceFigures, Timing};

    #[test]
    fn phases_become_deltas_up_to_ready() {
        let t = |phase: &str, micros| Timing {
            phase: phase.into(),
            micros,
        };
        let outcome = Outcome {
            exit_status: 0,
            oom_killed: false,
            message: None,
            timings: vec![
                t(phase::LAUNCHER_START, 0),
                t(phase::NAMESPACES_READY, 2000),
                t(phase::EXEC, 3000),
                t(phase::READY, 7500),
                t(phase::EXIT, 9000),
            ],
            resources: ResourceFigures::default(),
        };
        let s = phase_samples(&outcome).unwrap();
        let names: Vec<(&str, f64)> = s.iter().map(|s| (s.metric.as_str(), s.value)).collect();
        assert_eq!(
            names,
            vec![
                ("ready_ms", 7.5),
                ("phase_namespaces_ready_ms", 2.0),
                ("phase_exec_ms", 1.0),
                ("phase_ready_ms", 4.5)
            ]
        );
        let unready = Outcome {
            timings: vec![t(phase::LAUNCHER_START, 0), t(phase::EXIT, 10)],
            ..outcome
        };
        assert!(phase_samples(&unready).is_none());
    }
}
