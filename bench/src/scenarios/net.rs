//! net: host↔sandbox TCP throughput and request/response latency. A `net serve` runs on the
//! host; the sandbox (`--net host`: veth in a container, virtio-net on a tap in a VM) connects
//! to its gateway, the host; natively the client uses loopback.

use super::compute::{number, run_native};
use super::sandbox;
use crate::config::Scenario;
use crate::error::BenchError;
use crate::process::{Finished, Held};
use crate::runner::{Bench, Sample};
use std::process::Command;
use std::time::Duration;

pub fn run(bench: &mut Bench) {
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
        bench.series(Scenario::Net, mode.name(), |_| {
            let what = format!("{mode} net");
            samples(&cmd.run()?.check(&what)?, &what)
        });
    }
    let addr = format!("127.0.0.1:{port}");
    let secs = seconds.to_string();
    bench.series(Scenario::Net, "native", |_| {
        let what = "native net (loopback)";
        samples(
            &run_native(&["net", "--addr", &addr, "--seconds", &secs], what)?,
            what,
        )
    });
    let _ = server.terminate(Duration::from_secs(2));
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
