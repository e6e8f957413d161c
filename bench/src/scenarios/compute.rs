//! cpu and syscall: the same workloads in each mode, in gVisor and natively. CPU-bound code
//! runs at native speed in every sandbox; system calls are where the three isolation models
//! differ: seccomp filtering on the host kernel (container), a guest kernel that handles them
//! without exits (VM), or gVisor's Sentry in user space intercepting each one (runsc).

use super::{record, sandbox};
use crate::config::{Peer, Scenario};
use crate::error::BenchError;
use crate::peers::Peers;
use crate::process::{run_to_end, Finished};
use crate::runner::{Bench, Sample};
use serde_json::Value;
use std::process::Command;

pub fn run(bench: &mut Bench, peers: &mut Peers, scenario: Scenario) {
    let seconds = format!("{}", bench.config.sizes().workload_seconds);
    let workload = scenario.name();
    let args = ["sandbox-guest", workload, "--seconds", &seconds];
    for mode in bench.modes() {
        let cmd = sandbox(bench, mode, &args);
        record(bench, mode.name(), scenario, "workload", &cmd);
        bench.series(scenario, mode.name(), |_| {
            let what = format!("{mode} {workload}");
            samples(scenario, &cmd.run()?.check(&what)?, &what)
        });
    }
    let peer = Peer::Runsc;
    if peers.usable(bench, peer, scenario) {
        let oci_args = [
            sandbox_protocol::GUEST_PATH_IN_IMAGE,
            workload,
            "--seconds",
            &seconds,
        ];
        match peers.oci_setup(bench, scenario, peer, workload, Some(&oci_args), |_| {}) {
            Ok(run) => bench.series(scenario, peer.name(), |_| {
                let what = format!("{peer} {workload}");
                samples(scenario, &peers.oci_run(&run)?, &what)
            }),
            Err(e) => bench.fail(scenario, peer.name(), &e),
        }
    }
    super::record_native(bench, scenario, &args[1..]);
    bench.series(scenario, "native", |_| {
        let what = format!("native {workload}");
        let f = run_native(&args[1..], &what)?;
        samples(scenario, &f, &what)
    });
}

/// Runs the guest program on the host.
pub fn run_native(args: &[&str], what: &str) -> Result<Finished, BenchError> {
    let bin = sandbox_protocol::paths::guest_binary().map_err(|e| BenchError::run(what, e))?;
    run_to_end(Command::new(bin).args(args), what)?.check(what)
}

fn samples(scenario: Scenario, f: &Finished, what: &str) -> Result<Vec<Sample>, BenchError> {
    let v = f.result(what)?;
    let num = |path: &[&str]| -> Result<f64, BenchError> {
        let mut x = &v;
        for p in path {
            x = &x[*p];
        }
        x.as_f64()
            .ok_or_else(|| BenchError::run(what, format!("no {} in {v}", path.join("."))))
    };
    Ok(match scenario {
        Scenario::Cpu => vec![Sample::higher(
            "ops_per_second",
            "ops/s",
            num(&["ops_per_second"])?,
        )],
        _ => vec![
            Sample::lower("getpid_ns", "ns", num(&["getpid", "ns_per_call"])?),
            Sample::lower(
                "write_64b_ns",
                "ns",
                num(&["write_64_bytes_dev_null", "ns_per_call"])?,
            ),
        ],
    })
}

/// A number at `path` in a workload's JSON result.
pub fn number(v: &Value, path: &[&str], what: &str) -> Result<f64, BenchError> {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .ok_or_else(|| BenchError::run(what, format!("no {} in its result {v}", path.join("."))))
}
