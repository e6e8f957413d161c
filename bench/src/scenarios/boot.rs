//! boot: launch → the workload's `ready`, broken into the launcher's phases (container:
//! namespaces, rootfs, exec; VM: VMM set-up, kernel, init), plus the wall clock to exit
//! (`wall_ms`) and the wall clock of a `true` run (`true_wall_ms`, what the OCI peers run); the
//! peers start `/bin/true` (sandbox-runtime, crun, runc: `true_wall_ms`, each `<runtime> run` of
//! one bundle) or boot the same kernel to a ready line
//! (QEMU microvm: `ready_ms`, and `wall_ms` to its exit).

use super::sandbox;
use crate::config::{Peer, Scenario};
use crate::error::BenchError;
use crate::peers::Peers;
use crate::process::ms;
use crate::runner::{Bench, Sample};
use sandbox_spec::{phase, Outcome};

pub fn run(bench: &mut Bench, peers: &mut Peers) {
    for mode in bench.modes() {
        let cmd = sandbox(bench, mode, &["sandbox-guest", "ready"]);
        let true_cmd = sandbox(bench, mode, &["true"]);
        bench.series(Scenario::Boot, mode.name(), |_| {
            let f = cmd.run()?.check(&format!("{mode} boot"))?;
            let outcome = f.outcome.as_ref().ok_or_else(|| {
                BenchError::run(format!("{mode} boot"), "the launcher wrote no --outcome JSON")
            })?;
            let mut samples = phase_samples(outcome)
                .ok_or_else(|| BenchError::run(format!("{mode} boot"), "the outcome has no `ready` phase"))?;
            samples.push(Sample::lower("wall_ms", "ms", ms(f.wall)));
            let t = true_cmd.run()?.check(&format!("{mode} true"))?;
            samples.push(Sample::lower("true_wall_ms", "ms", ms(t.wall)));
            Ok(samples)
        });
    }
    for peer in [Peer::SandboxRuntime, Peer::Crun, Peer::Runc] {
        if peers.usable(bench, peer) {
            bench.series(Scenario::Boot, peer.name(), |_| {
                let wall = peers.oci_true(peer)?;
                Ok(vec![Sample::lower("true_wall_ms", "ms", ms(wall))])
            });
        }
    }
    if peers.usable(bench, Peer::QemuMicrovm) {
        bench.series(Scenario::Boot, Peer::QemuMicrovm.name(), |_| {
            let (ready, wall) = peers.qemu_boot()?;
            Ok(vec![
                Sample::lower("ready_ms", "ms", ms(ready)),
                Sample::lower("wall_ms", "ms", ms(wall)),
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
