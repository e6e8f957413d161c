//! exec: a second process in a sandbox that is already running — `exec ID -- true` from the
//! command's start to its exit, the way a user or an orchestrator's probe pays it. Container
//! mode joins the sandbox's namespaces and cgroup (setns, fork, exec on the host kernel); VM
//! mode asks the guest agent over vsock, and the guest kernel forks and execs. Beside them the
//! OCI runtimes' own `exec` into a held container of the same image.

use super::{ready_timeout, record, sandbox, HOLD};
use crate::config::{Peer, Scenario};
use crate::peers::{hold_env, Peers, HOLD_ARGS};
use crate::process::{is_ready_result, ms, run_to_end};
use crate::runner::{Bench, Sample};
use std::process::Command;
use std::time::{Duration, Instant};

/// What every exec runs: the cheapest process there is, so the figure is the path's cost.
const EXEC: &[&str] = &["true"];

pub fn run(bench: &mut Bench, peers: &mut Peers) {
    for mode in bench.modes() {
        let name = format!("bench-exec-{}-{}", mode.name(), std::process::id());
        let cmd = sandbox(bench, mode, HOLD).flag("--name").flag(name.clone());
        record(bench, mode.name(), Scenario::Exec, "hold", &cmd);
        let exec_argv = exec_argv(&bench.config.sandbox_bin, &name);
        bench
            .subject(mode.name(), "")
            .command(Scenario::Exec, "exec", report_argv(&exec_argv, &name));
        let held = cmd.spawn().and_then(|mut h| {
            h.wait_ready(is_ready_result, ready_timeout(mode))?;
            Ok(h)
        });
        let mut held = match held {
            Ok(h) => h,
            Err(e) => {
                bench.fail(Scenario::Exec, mode.name(), &e);
                continue;
            }
        };
        bench.series(Scenario::Exec, mode.name(), |_| {
            let what = format!("sandbox exec into a {mode}");
            let started = Instant::now();
            run_to_end(Command::new(&exec_argv[0]).args(&exec_argv[1..]), &what)?.check(&what)?;
            Ok(vec![Sample::lower("exec_ms", "ms", ms(started.elapsed()))])
        });
        if let Err(e) = held.terminate(Duration::from_secs(15)) {
            bench.fail(Scenario::Exec, mode.name(), &e);
        }
    }
    for peer in [Peer::SandboxRuntime, Peer::Crun, Peer::Runc, Peer::Runsc] {
        if !peers.usable(bench, peer, Scenario::Exec) {
            continue;
        }
        let run = match peers.oci_setup(bench, Scenario::Exec, peer, "hold", Some(HOLD_ARGS), hold_env) {
            Ok(r) => r,
            Err(e) => {
                bench.fail(Scenario::Exec, peer.name(), &e);
                continue;
            }
        };
        let hold = match peers.oci_hold(&run) {
            Ok(h) => h,
            Err(e) => {
                bench.fail(Scenario::Exec, peer.name(), &e);
                continue;
            }
        };
        bench
            .subject(peer.name(), "")
            .command(Scenario::Exec, "exec", hold.exec_argv(EXEC));
        bench.series(Scenario::Exec, peer.name(), |_| {
            let started = Instant::now();
            hold.exec(EXEC)?;
            Ok(vec![Sample::lower("exec_ms", "ms", ms(started.elapsed()))])
        });
    }
}

/// `sandbox exec NAME -- true`.
fn exec_argv(bin: &std::path::Path, name: &str) -> Vec<String> {
    let mut argv = vec![bin.display().to_string(), "exec".into(), name.into(), "--".into()];
    argv.extend(EXEC.iter().map(|a| a.to_string()));
    argv
}

/// The command line for the report: the binary by its name, the sandbox's name as `NAME`.
fn report_argv(argv: &[String], name: &str) -> Vec<String> {
    argv.iter()
        .enumerate()
        .map(|(i, a)| match i {
            0 => std::path::Path::new(a)
                .file_name()
                .map_or_else(|| a.clone(), |n| n.to_string_lossy().into_owned()),
            _ if a == name => "NAME".into(),
            _ => a.clone(),
        })
        .collect()
}
