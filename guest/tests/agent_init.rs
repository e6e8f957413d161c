//! The guest agent with init's reaper, as in a VM (as root): PID 1 of a new PID namespace runs
//! what init runs when it has the agent — signals blocked, the agent's threads serving, the
//! main thread reaping everything and delivering statuses, the workload started by `run`,
//! the rest killed at its end, sessions finished before exiting — while this test speaks the
//! protocol over socket pairs (there is no vsock outside a VM).
//!
//! One test in this file: the fork below happens while this binary has no other thread but
//! the test harness's idle main thread.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use sandbox_guest::init::agent::{Agent, Config, RunnableWorkload};
use sandbox_guest::init::{exec, reaper};
use sandbox_protocol::agent::{read_frame, write_frame, Frame, FrameKind};
use serde_json::{json, Value};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HANG: Duration = Duration::from_secs(20);
const CONNECTIONS: usize = 5;

/// PID 1 of the namespace: init's agent path (see `sandbox_guest::init::run`).
fn pid1(conns: Vec<UnixStream>) -> i32 {
    reaper::block_signals().unwrap();
    let children = Arc::new(reaper::Children::for_init());
    let env = vec![("PATH".to_string(), exec::DEFAULT_PATH.to_string())];
    let argv: Vec<String> = ["sh", "-c", "echo started; read x; echo got $x; exec sleep 100"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let workload = exec::prepare_command(&argv, &env, None, None).unwrap();
    let config = Config {
        workload: Some(RunnableWorkload {
            prepared: Arc::new(workload),
            terminal: false,
            size: None,
        }),
        env,
        workdir: None,
        user: None,
        signal_all: std::process::id() == 1,
        request_timeout: HANG,
    };
    let agent = Agent::new(config, children.clone());
    for conn in conns {
        agent.serve(OwnedFd::from(conn));
    }
    let status = reaper::wait_for_workload(&children);
    reaper::kill_remaining_into(&children);
    assert!(agent.wait_sessions(Duration::from_secs(5)), "sessions end");
    status
}

fn send(conn: &UnixStream, value: Value) {
    let frame = Frame::control(&value);
    write_frame(&mut &*conn, frame.kind, &frame.payload).unwrap();
}

fn control(conn: &UnixStream) -> Value {
    let frame = read_frame(&mut &*conn).unwrap().expect("a frame");
    assert_eq!(frame.kind, FrameKind::Control, "{frame:?}");
    serde_json::from_slice(&frame.payload).unwrap()
}

/// Stdout until it holds `wanted`.
fn stdout_until(conn: &UnixStream, wanted: &str) {
    let mut seen = String::new();
    while !seen.contains(wanted) {
        let frame = read_frame(&mut &*conn).unwrap().expect("output");
        assert_eq!(frame.kind, FrameKind::Stdout, "{frame:?} after {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&frame.payload));
    }
}

/// The status at the end of a session (output before it skipped).
fn status(conn: &UnixStream) -> i64 {
    loop {
        let frame = read_frame(&mut &*conn).unwrap().expect("the status");
        if frame.kind == FrameKind::Control {
            let value: Value = serde_json::from_slice(&frame.payload).unwrap();
            return value["exit"].as_i64().unwrap_or_else(|| panic!("{value}"));
        }
    }
}

#[test]
fn the_agent_serves_beside_init_as_pid_1() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it makes a PID namespace): run `cargo test` as root"
    );
    let (hosts, guests): (Vec<_>, Vec<_>) = (0..CONNECTIONS).map(|_| UnixStream::pair().unwrap()).unzip();
    for host in &hosts {
        host.set_read_timeout(Some(HANG)).unwrap();
    }
    let (pid_r, pid_w) = nix::unistd::pipe().unwrap();
    // SAFETY: the only other thread is the harness's, idle; the child only makes system calls
    // until its own child (PID 1 of the new namespace) runs the agent, single-threaded at
    // first like init.
    let child = match unsafe { nix::unistd::fork() }.unwrap() {
        ForkResult::Child => {
            // The host ends are the test's alone (the guest must see them close).
            drop(hosts);
            // SAFETY: unshare, fork, write, waitpid and _exit are plain system calls.
            unsafe {
                if libc::unshare(libc::CLONE_NEWPID) != 0 {
                    libc::_exit(100);
                }
                let init = libc::fork();
                if init == 0 {
                    let code = std::panic::catch_unwind(move || pid1(guests)).unwrap_or(102);
                    libc::_exit(code);
                }
                libc::write(pid_w.as_raw_fd(), (&init as *const i32).cast(), 4);
                let mut status = 0;
                libc::waitpid(init, &mut status, 0);
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    101
                };
                libc::_exit(code)
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(guests);
    drop(pid_w);
    let mut pid = [0u8; 4];
    std::fs::File::from(pid_r).read_exact(&mut pid).unwrap();
    let init = Pid::from_raw(i32::from_ne_bytes(pid));
    // Whatever happens below, the namespace ends with the test.
    struct KillOnDrop(Pid);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _guard = KillOnDrop(init);

    let [run, long_exec, orphaning_exec, ping, kill_all]: [UnixStream; CONNECTIONS] =
        hosts.try_into().unwrap();
    send(&run, json!({"op":"run"}));
    assert_eq!(control(&run)["ok"], true);
    stdout_until(&run, "started\n");
    send(
        &long_exec,
        json!({"op":"exec","argv":["sh","-c","echo exec-out; sleep 100"]}),
    );
    assert_eq!(control(&long_exec)["ok"], true);
    stdout_until(&long_exec, "exec-out\n");
    // An exec that leaves an orphan holding its stdout: reaped by PID 1, status still reported.
    send(
        &orphaning_exec,
        json!({"op":"exec","argv":["sh","-c","sleep 100 & echo parent; exit 6"]}),
    );
    assert_eq!(control(&orphaning_exec)["ok"], true);
    assert_eq!(status(&orphaning_exec), 6);
    send(&ping, json!({"op":"ping"}));
    assert_eq!(control(&ping)["version"], 1);
    write_frame(&mut &run, FrameKind::Stdin, b"hello\n").unwrap();
    stdout_until(&run, "got hello\n");
    send(&kill_all, json!({"op":"signal","signal":15,"all":true}));
    assert_eq!(control(&kill_all), json!({"ok":true}));
    assert_eq!(status(&run), 128 + 15, "the workload's status");
    assert_eq!(
        status(&long_exec),
        128 + 15,
        "the exec's status, delivered by the reaper"
    );
    drop((run, long_exec, orphaning_exec));
    let start = Instant::now();
    let code = loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::Exited(_, code) => break code,
            WaitStatus::StillAlive => {
                assert!(start.elapsed() < HANG, "PID 1 did not end");
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 128 + 15, "init ends with the workload's status");
}
