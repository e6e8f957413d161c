//! Runs `sandbox-guest init` as PID 1 of new PID, mount and UTS namespaces (`unshare`, as root)
//! with container-mode plans, and checks what a workload sees and the status init ends with.
//! The private mount namespace keeps init's mounts (/tmp, /run) off the host.

use sandbox_protocol::{Mode, Plan, ReadyChannel};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-guest");
/// Longest an init run may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(20);

fn require_root_and_unshare() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the init tests need root (they create PID/mount/UTS namespaces): run `cargo test` as root"
    );
    let found = Command::new("unshare")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "unshare is missing: run `apt-get install util-linux`"
    );
}

/// A directory for files the workload runs, where init's own mounts (a fresh tmpfs on /tmp and
/// /run) cannot hide them, wherever the checkout and its target directory are.
fn outside_tmp() -> tempfile::TempDir {
    tempfile::tempdir_in("/var/tmp").expect("a directory under /var/tmp")
}

/// A copy of the guest program the workload can run (see [`outside_tmp`]).
fn workload_binary(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("sandbox-guest");
    std::fs::copy(BIN, &path).unwrap();
    path.to_string_lossy().into_owned()
}

fn sh(script: &str) -> Plan {
    Plan::new(Mode::Container, vec!["sh".into(), "-c".into(), script.into()])
}

/// Runs init with `plan` (from a file named by SANDBOX_PLAN) and returns its output and the
/// time it took (`during` runs with unshare's pid meanwhile); fails the test if it does not end within [`HANG`].
fn run_init_with(
    plan: &Plan,
    configure: impl FnOnce(&mut Command),
    during: impl FnOnce(u32),
) -> (Output, Duration) {
    require_root_and_unshare();
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(plan).unwrap()).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--fork", "--pid", "--mount", "--uts", "--mount-proc", BIN, "init"])
        .env("SANDBOX_PLAN", &plan_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut cmd);
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    during(child.id());
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > HANG {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("init did not end within {HANG:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed();
    (child.wait_with_output().unwrap(), took)
}

fn run_init(plan: &Plan) -> Output {
    run_init_with(plan, |_| {}, |_| {}).0
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn exit_status_of_the_workload_is_inits() {
    let out = run_init(&sh("exit 7"));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

#[test]
fn missing_command_is_127_with_a_message() {
    let out = run_init(&Plan::new(Mode::Container, vec!["no-such-command-xyz".into()]));
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(
        text(&out.stderr).contains("sandbox-guest: no-such-command-xyz: command not found in this image"),
        "{out:?}"
    );
}

#[test]
fn command_that_is_not_executable_is_126() {
    let dir = outside_tmp();
    let file = dir.path().join("not-executable");
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
    let out = run_init(&Plan::new(Mode::Container, vec![file.to_str().unwrap().into()]));
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(text(&out.stderr).contains("not-executable"), "{out:?}");
}

#[test]
fn hostname_comes_from_the_plan() {
    let mut plan = sh("uname -n");
    plan.hostname = Some("sbx-guest-test".into());
    let out = run_init(&plan);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "sbx-guest-test");
}

#[test]
fn environment_user_and_workdir_are_applied() {
    let mut plan = sh(concat!(
        "test \"$FOO\" = 'bar baz' || exit 10; test \"$TERM\" = linux || exit 11; ",
        "test \"$HOME\" = /root || exit 12; test \"$SANDBOX_READY\" = none || exit 13; ",
        "test \"$(id -u):$(id -g)\" = 65534:65534 || exit 14; test \"$(pwd)\" = / || exit 15; ",
        "case \"$PATH\" in /usr/local/sbin:*) ;; *) exit 16;; esac; ",
        "test -z \"$SANDBOX_PLAN\" || exit 17"
    ));
    plan.env = vec![("FOO".into(), "bar baz".into())];
    plan.user = Some((65534, 65534));
    plan.workdir = Some("/".into());
    let out = run_init(&plan);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn tmp_is_mounted_when_missing_and_proc_is_private() {
    // init mounts a tmpfs on /tmp if the launcher did not; `--mount-proc` gave it its own /proc.
    let out = run_init(&sh(
        "awk '$2 == \"/tmp\" {print $3}' /proc/self/mounts; echo pid=$$",
    ));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l == "tmpfs"), "{stdout}");
    assert!(
        stdout.contains("pid=2"),
        "the workload should be PID 2 under init: {stdout}"
    );
}

#[test]
fn orphans_are_reaped_and_leftovers_killed() {
    // The subshell's child is orphaned and re-parented to init; once it exits, only init can
    // reap it. Then a long sleep left in the background must not keep the sandbox alive.
    let plan = sh(concat!(
        "(sh -c 'exit 0' &); sleep 0.3; ",
        "for s in /proc/[0-9]*/stat; do read -r line < $s 2>/dev/null || continue; ",
        "set -- $line; if [ \"$3\" = Z ]; then echo zombie $1; exit 3; fi; done; ",
        "sleep 60 & exit 0"
    ));
    let (out, took) = run_init_with(&plan, |_| {}, |_| {});
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        took < Duration::from_secs(30),
        "init waited for the background sleep: {took:?}"
    );
}

#[test]
fn killed_by_a_signal_is_128_plus_n() {
    let out = run_init(&sh("kill -TERM $$"));
    assert_eq!(out.status.code(), Some(128 + 15), "{out:?}");
    let out = run_init(&sh("kill -KILL $$"));
    assert_eq!(out.status.code(), Some(128 + 9), "{out:?}");
}

#[test]
fn sigterm_to_init_is_forwarded_and_ready_reaches_the_host() {
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let fd = write_end.as_raw_fd();
    let dir = outside_tmp();
    let bin = workload_binary(&dir);
    let mut plan = sh(&format!(
        "trap 'exit 42' TERM; {bin} ready >/dev/null || exit 5; while :; do sleep 0.05; done"
    ));
    plan.ready = ReadyChannel::Fd(fd);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = [0u8; 6];
        let _ = tx.send(std::fs::File::from(read_end).read_exact(&mut got).map(|()| got));
    });
    let (out, _) = run_init_with(
        &plan,
        |_| {},
        move |unshare_pid| {
            drop(write_end);
            let got = rx
                .recv_timeout(HANG)
                .expect("no ready line within the time limit")
                .unwrap();
            assert_eq!(&got, b"ready\n");
            // init is unshare's only child; signal it from outside its namespace.
            let children =
                std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children")).unwrap();
            let init: i32 = children
                .split_whitespace()
                .next()
                .expect("unshare has a child")
                .parse()
                .unwrap();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
        },
    );
    assert_eq!(out.status.code(), Some(42), "{out:?}");
}

#[test]
fn plan_can_come_from_an_inherited_fd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    std::fs::write(&path, serde_json::to_vec(&sh("exit 9")).unwrap()).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
    let fd = file.as_raw_fd();
    let (out, _) = run_init_with(
        &sh("exit 1"),
        |cmd| {
            cmd.env("SANDBOX_PLAN", format!("fd:{fd}"));
        },
        |_| {},
    );
    drop(file);
    assert_eq!(out.status.code(), Some(9), "{out:?}");
}

#[test]
fn a_bad_plan_is_one_line_and_status_1() {
    let (out, _) = run_init_with(
        &sh("exit 0"),
        |cmd| {
            cmd.env("SANDBOX_PLAN", "/nonexistent/plan.json");
        },
        |_| {},
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("SANDBOX_PLAN=/nonexistent/plan.json"), "{stderr}");
}
