//! `sandbox exec ID -- CMD` in both modes, through the real CLI: output and exit status, stdin
//! with `-i`, `-e`/`-w`, a signal passed on to the process, a missing command (127), whose kernel
//! answers, and the one-line refusals for a sandbox that has ended or whose launcher was killed.
//!
//! The container scenario runs here. The VM scenario needs hardware KVM: it runs here when the
//! host has it, else inside the lab's L1 through `sandbox_lab::testing::delegate_with` (this test
//! binary, filtered to that test), with the real `sandbox` CLI shipped next to it — never
//! skipped. Each scenario prints the round trip of `exec ID -- true` (a figure for the reader,
//! not a pass/fail limit).
//!
//! Needs root, busybox-static (the default image), a built `sandbox-guest`, and for the VM the
//! built guest kernel and binutils (`strip`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sandbox_lab::testing::{delegate_with, Place};
use sandbox_lab::{Include, LabOptions};

const L1_CLI: &str = "/opt/sandbox-test/sandbox";
const CLI_ENV: &str = "SANDBOX_TEST_CLI";

fn cli() -> PathBuf {
    std::env::var_os(CLI_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sandbox")))
}

/// Runs `sandbox ARGS` with `home` as `$SANDBOX_HOME` and `stdin` as its input.
fn sandbox_with(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let started = Instant::now();
    let mut child = Command::new(cli())
        .args(args)
        .env("SANDBOX_HOME", home)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sandbox CLI runs");
    if let Some(text) = stdin {
        let mut input = child.stdin.take().unwrap();
        // Without -i the CLI reads nothing: its stdin may be closed before this write.
        let _ = input.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "sandbox {} ({:.2} s): {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        started.elapsed().as_secs_f64(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sandbox(home: &Path, args: &[&str]) -> Output {
    sandbox_with(home, args, None)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Where the launcher of `name` writes its output and trace (beside, not in, `home/run`).
fn launcher_log(home: &Path, name: &str) -> PathBuf {
    home.join(format!("launcher-{name}.log"))
}

/// `sandbox run --mode MODE --name NAME -- sleep 600` in the background, its output going to
/// [`launcher_log`]; with `trace`, also its trace (in a VM, the guest kernel's lines: it boots
/// verbose, which costs about 8 s in the lab).
fn start(home: &Path, mode: &str, name: &str, trace: bool) -> Child {
    let log = std::fs::File::create(launcher_log(home, name)).unwrap();
    let trace = if trace { &["--trace"][..] } else { &[] };
    Command::new(cli())
        .arg("run")
        .args(trace)
        .args(["--mode", mode, "--name", name, "--", "sleep", "600"])
        .env("SANDBOX_HOME", home)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the sandbox CLI runs")
}

/// Waits until `exec NAME -- true` works (the VM may still be booting); on failure, shows what
/// the launcher printed (where the guest stopped booting, say).
fn wait_ready(home: &Path, name: &str, launcher: &mut Child, within: Duration) {
    let deadline = Instant::now() + within;
    let failed = |why: String| -> ! {
        let log = std::fs::read_to_string(launcher_log(home, name)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(120)..].join("\n");
        panic!("{why}\n--- the launcher's output and trace (last 120 lines)\n{tail}\n---");
    };
    loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            failed(format!(
                "the launcher of {name:?} ended before its sandbox was ready: {status}"
            ));
        }
        let out = sandbox(home, &["exec", name, "--", "true"]);
        if out.status.success() {
            return;
        }
        if Instant::now() >= deadline {
            let _ = launcher.kill();
            failed(format!("exec into {name:?} never worked within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ends the launcher with SIGTERM and waits (at most `within`).
fn stop(launcher: &mut Child, within: Duration) {
    let pid = nix::unistd::Pid::from_raw(launcher.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + within;
    while launcher.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the launcher did not end within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_one_line(out: &Output, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err:?}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
}

/// The same checks in either mode; `kernel_differs`: whether the sandbox's kernel is its own.
fn scenario(mode: &str, boot_limit: Duration) {
    assert!(nix::unistd::geteuid().is_root(), "the exec tests need root");
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let name = "ex";
    let mut launcher = start(home, mode, name, true);
    wait_ready(home, name, &mut launcher, boot_limit);

    // Output, stderr and the exit status.
    let out = sandbox(
        home,
        &["exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!((code(&out), text(&out.stdout).as_str()), (3, "out\n"));
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));

    // A missing command: 127 and one line naming it.
    let out = sandbox(home, &["exec", name, "--", "no-such-command"]);
    assert_eq!(code(&out), 127, "{}", text(&out.stderr));
    assert_one_line(&out, &["no-such-command"]);

    // -i: stdin reaches the process, and its end ends `cat`. Without -i it reads nothing.
    let out = sandbox_with(home, &["exec", "-i", name, "--", "cat"], Some("piped in\n"));
    assert_eq!((code(&out), text(&out.stdout).as_str()), (0, "piped in\n"));
    let out = sandbox_with(home, &["exec", name, "--", "cat"], Some("not read\n"));
    assert_eq!((code(&out), text(&out.stdout).as_str()), (0, ""));

    // -e, -w and -u.
    let flags = [
        "exec",
        "-e",
        "GREETING=hi there",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        name,
        "--",
    ];
    let out = sandbox(home, &flags);
    assert_ne!(code(&out), 0, "exec without a command is refused");
    let with_command: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["sh", "-c", "echo $GREETING; pwd; id -u"])
        .collect();
    let out = sandbox(home, &with_command);
    assert_eq!(
        (code(&out), text(&out.stdout).as_str()),
        (0, "hi there\n/tmp\n1000\n")
    );

    // A signal to `sandbox exec` reaches the process.
    let mut exec = Command::new(cli())
        .args([
            "exec",
            name,
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo waiting; while :; do sleep 0.1; done",
        ])
        .env("SANDBOX_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(exec.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("waiting"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(exec.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("got-term"));
    assert_eq!(exec.wait().unwrap().code(), Some(7));

    // Whose kernel answers: the host's in a container, the guest's own in a VM.
    let out = sandbox(home, &["exec", name, "--", "uname", "-r"]);
    let host = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    let inside = text(&out.stdout).trim().to_string();
    if mode == "vm" {
        assert_ne!(inside, host, "a VM's process answers with the guest kernel");
    } else {
        assert_eq!(inside, host, "a container's process answers with the host kernel");
    }

    // The round trip of `exec -- true`, for the reader.
    let mut rtts: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            assert!(sandbox(home, &["exec", name, "--", "true"]).status.success());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    rtts.sort_by(f64::total_cmp);
    eprintln!(
        "exec round trip ({mode}, `sandbox exec {name} -- true`, CLI start to exit): median {:.1} ms, min {:.1} ms",
        rtts[2], rtts[0]
    );

    if mode == "vm" {
        agent_round_trip(home);
    }

    // After the sandbox has ended: one line, nothing to exec into.
    stop(&mut launcher, Duration::from_secs(60));
    let out = sandbox(home, &["exec", name, "--", "true"]);
    assert_ne!(code(&out), 0);
    assert_one_line(&out, &["no sandbox \"ex\" is running", "sandbox ps"]);

    // A launcher killed outright leaves a stopped sandbox (until `gc`): refused in one line.
    let mut killed = start(home, mode, "gone", false);
    wait_ready(home, "gone", &mut killed, boot_limit);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let out = sandbox(home, &["exec", "gone", "--", "true"]);
    assert_ne!(code(&out), 0);
    assert_one_line(&out, &["stopped", "gone"]);
    assert!(sandbox(home, &["gc"]).status.success());
    let left: Vec<_> = std::fs::read_dir(home.join("run"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run directories left: {left:?}");
}

/// The guest agent's own round trip, without a CLI process's start: `exec true` through the
/// VM's vsock socket from this process, 20 times (printed for the reader).
fn agent_round_trip(home: &Path) {
    use sandbox_core::vm::agent::{Agent, ExecRequest, Output, VSOCK_SOCKET_NAME};
    let dir = std::fs::read_dir(home.join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join(VSOCK_SOCKET_NAME).exists())
        .expect("a running VM's vsock socket under $SANDBOX_HOME/run");
    let agent = Agent::connect(dir.join(VSOCK_SOCKET_NAME), Duration::from_secs(10)).unwrap();
    let request = ExecRequest {
        argv: vec!["true".into()],
        ..ExecRequest::default()
    };
    let mut times: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let mut session = agent.exec(&request).unwrap();
            session.controller().close_stdin().unwrap();
            loop {
                match session.next_output().unwrap() {
                    Output::Exit(code) => {
                        assert_eq!(code, 0);
                        break;
                    }
                    Output::Stdout(_) | Output::Stderr(_) => {}
                }
            }
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    eprintln!(
        "agent round trip (vm, exec `true` over vsock from one process: connect, start, exit status): \
         median {:.1} ms, min {:.1} ms, max {:.1} ms",
        times[10], times[0], times[19]
    );
    // The same path without a process: what the transport (vsock, the VMM, the agent's loop)
    // costs, so the rest is the guest kernel's fork and exec.
    let mut pings: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            agent.ping().unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    pings.sort_by(f64::total_cmp);
    eprintln!(
        "agent ping (vm, a request and its answer on a new vsock connection, no process): \
         median {:.1} ms, min {:.1} ms, max {:.1} ms",
        pings[10], pings[0], pings[19]
    );
}

#[test]
fn exec_in_a_container() {
    scenario("container", Duration::from_secs(30));
}

#[test]
fn exec_in_a_vm() {
    let scratch = tempfile::tempdir().unwrap();
    let opts = if sandbox_lab::HostKvm::detect().needs_lab() {
        let stripped = scratch.path().join("sandbox");
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(env!("CARGO_BIN_EXE_sandbox"))
            .status()
            .expect("strip is not installed: run `apt-get install binutils`");
        assert!(status.success(), "strip failed on the sandbox binary");
        LabOptions {
            progress: false,
            timeout: Some(Duration::from_secs(400)),
            include: vec![Include {
                host: stripped,
                l1_path: L1_CLI.into(),
            }],
            env: vec![
                (CLI_ENV.into(), L1_CLI.into()),
                ("SANDBOX_GUEST_BIN".into(), "/bin/sandbox-guest".into()),
            ],
            ..LabOptions::default()
        }
    } else {
        LabOptions::default()
    };
    match delegate_with("exec_in_a_vm", &opts).expect("the lab runs the test") {
        Place::Lab { .. } => {}
        Place::Here => scenario("vm", Duration::from_secs(180)),
    }
}
