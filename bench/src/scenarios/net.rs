//! net: host↔sandbox TCP throughput and request/response latency. A `net serve` runs on the
//! host; the sandbox (`--net host`: veth in a container, virtio-net on a tap in a VM) connects
//! to its gateway, the host; natively the client uses loopback. gVisor (runsc) gets the same kind
//! of link — a veth whose host end has a /30 from the same allocator — in a network namespace,
//! and runs its own TCP/IP stack on it (`--network=sandbox`): every packet crosses the Sentry.

use super::compute::{number, run_native};
use super::{record, sandbox};
use crate::config::{Peer, Scenario};
use crate::error::BenchError;
use crate::peers::Peers;
use crate::process::{Finished, Held};
use crate::runner::{Bench, Sample};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

pub fn run(bench: &mut Bench, peers: &mut Peers) {
    let (mut server, port) = match start_server() {
        Ok(s) => s,
        Err(e) => {
            bench.fail(Scenario::Net, "server", &e);
            return;
        }
    };
    let seconds = bench.config.sizes().workload_seconds.max(0.5);
    for mode in bench.modes() {
        let script = format!(
            "gw=$(ip route | awk '/^default/ {{print $3; exit}}'); \
             [ -n \"$gw\" ] || {{ echo 'no default route in the sandbox' >&2; exit 1; }}; \
             exec sandbox-guest net --addr $gw:{port} --seconds {seconds}"
        );
        let cmd = sandbox(bench, mode, &["sh", "-c", &script])
            .flag("--net")
            .flag("host");
        record(bench, mode.name(), Scenario::Net, "workload", &cmd);
        bench.series(Scenario::Net, mode.name(), |_| {
            let what = format!("{mode} net");
            samples(&cmd.run()?.check(&what)?, &what)
        });
    }
    runsc(bench, peers, port, seconds);
    let addr = format!("127.0.0.1:{port}");
    let secs = seconds.to_string();
    super::record_native(
        bench,
        Scenario::Net,
        &["net", "--addr", &addr, "--seconds", &secs],
    );
    bench.series(Scenario::Net, "native", |_| {
        let what = "native net (loopback)";
        samples(
            &run_native(&["net", "--addr", &addr, "--seconds", &secs], what)?,
            what,
        )
    });
    let _ = server.terminate(Duration::from_secs(2));
}

/// runsc on a veth in a network namespace of its own, talking to the host's server: with its
/// own network stack, or — where this runsc refuses to start that (see [`netstack_unusable`]) —
/// with the host kernel's, in the same namespace
/// (`--network=host`), as the report notes.
fn runsc(bench: &mut Bench, peers: &mut Peers, port: u16, seconds: f64) {
    let peer = Peer::Runsc;
    if !peers.usable(bench, peer, Scenario::Net) {
        return;
    }
    let setup = |bench: &mut Bench, peers: &mut Peers, purpose: &str| {
        let (gateway, netns) = peers.runsc_network()?;
        let addr = format!("{gateway}:{port}");
        let secs = seconds.to_string();
        let args = [
            sandbox_protocol::GUEST_PATH_IN_IMAGE,
            "net",
            "--addr",
            &addr,
            "--seconds",
            &secs,
        ];
        peers.oci_setup(bench, Scenario::Net, peer, purpose, Some(&args), |c| {
            if let Some(namespaces) = c["linux"]["namespaces"].as_array_mut() {
                namespaces.retain(|n| n["type"] != "network");
                namespaces.push(json!({"type": "network", "path": netns}));
            }
        })
    };
    // One discarded run finds out whether runsc's own stack starts here.
    let run = setup(bench, peers, "net").and_then(|run| match peers.oci_run(&run) {
        Ok(_) => Ok(run),
        Err(e) => match netstack_unusable(&e.to_string()) {
            Some(why) => {
                bench.note_once(format!(
                    "runsc net ran with --network=host (gVisor's hostinet: the Sentry intercepts \
                     the socket calls and passes them to the host kernel, in the same network \
                     namespace and on the same veth), not with its own stack \
                     (--network=sandbox): {why}. Its figures are hostinet's, not netstack's"
                ));
                setup(bench, peers, "net-hostinet")
            }
            None => Err(e),
        },
    });
    match run {
        Ok(run) => bench.series(Scenario::Net, peer.name(), |_| {
            let what = "runsc net";
            samples(&peers.oci_run(&run)?, what)
        }),
        Err(e) => bench.fail(Scenario::Net, peer.name(), &e),
    }
}

/// What runsc says when it takes a network namespace for the host's.
const NETSTACK_REFUSED: &str = "cannot run with network enabled in root network namespace";

/// Why runsc's own network stack cannot be measured here, from the error of its first run; `None`
/// when the error is of another kind (then it is the series' failure).
fn netstack_unusable(error: &str) -> Option<String> {
    if error.contains(NETSTACK_REFUSED) {
        Some(format!(
            "it refused to start here with \"{NETSTACK_REFUSED}\" — runsc 20221219 tells the root \
             namespace by /proc/sys/net/core/rmem_default, which newer kernels show in every namespace"
        ))
    } else {
        None
    }
}

/// Starts `sandbox-guest net serve` on the host on a free port.
fn start_server() -> Result<(Held, u16), BenchError> {
    let what = "the host's net server";
    let bin = sandbox_protocol::paths::guest_binary().map_err(|e| BenchError::run(what, e))?;
    let mut cmd = Command::new(bin);
    cmd.args(["net", "serve", "--port", "0", "--bind", "0.0.0.0"]);
    let mut held = Held::spawn(&mut cmd, what, None)?;
    held.wait_ready(|l| l.contains("net-serve"), Duration::from_secs(10))?;
    let port = held
        .last_line()
        .and_then(crate::process::last_json)
        .and_then(|v| {
            v["listening"]
                .as_str()
                .and_then(|a| a.rsplit(':').next()?.parse().ok())
        })
        .ok_or_else(|| BenchError::run(what, "its first line names no listening port"))?;
    Ok((held, port))
}

fn samples(f: &Finished, what: &str) -> Result<Vec<Sample>, BenchError> {
    let v = f.result(what)?;
    Ok(vec![
        Sample::higher(
            "stream_mbit_s",
            "Mbit/s",
            number(&v, &["stream", "mbit_per_second"], what)?,
        ),
        Sample::lower(
            "rr_latency_p50_us",
            "µs",
            number(&v, &["request_response", "latency_p50_us"], what)?,
        ),
        Sample::lower(
            "rr_latency_p99_us",
            "µs",
            number(&v, &["request_response", "latency_p99_us"], what)?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_netstack_refusal_falls_back_to_hostinet() {
        let refused = format!("runsc run (net) failed: exit status 128: {NETSTACK_REFUSED}");
        assert!(netstack_unusable(&refused).is_some_and(|w| w.contains("rmem_default")));
        // Any other failure of its own stack is the series' failure, not a reason to switch.
        let unreachable = "runsc run (net) failed: exit status 1: sandbox-guest net: cannot \
                           connect to 10.213.128.125:34245: No route to host (os error 113)";
        assert_eq!(netstack_unusable(unreachable), None);
        assert_eq!(
            netstack_unusable("runsc run (net) failed: exit status 1: cannot open the bundle"),
            None
        );
    }
}
