//! `sandbox run -t -i` in VM mode: an interactive shell on the guest's console, driven from a
//! pseudo-terminal this test holds. Natively where the host has hardware KVM; through the lab
//! otherwise (`sandbox lab --tty`, which gives the command in L1 a terminal relayed to this
//! one), so the guest really boots either way. A container in L1 gets the same check: L1 is a
//! pure cgroup v2 host.
//!
//! Needs a built guest kernel (`sandbox kernel build`) and, for the lab, `qemu-system-x86`.

mod terminal_support;

use sandbox_lab::HostKvm;
use std::time::{Duration, Instant};
use terminal_support::Session;

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");
/// L1's boot, the default image and its root disk built in L1, and the guest's boot.
const BOOT: Duration = Duration::from_secs(180);

/// `sandbox run ARGS` on a terminal: natively, or in the lab with `--tty`.
fn session(home: &tempfile::TempDir, run_args: &[&str], force_lab: bool) -> Session {
    let lab = force_lab || HostKvm::detect().needs_lab();
    let mut full: Vec<&str> = if lab {
        vec!["lab", "--tty", "--"]
    } else {
        Vec::new()
    };
    full.push("run");
    full.extend_from_slice(run_args);
    eprintln!("running {} {full:?}", if lab { "in the lab" } else { "natively" });
    Session::start(SANDBOX, &full, &[("SANDBOX_HOME", home.path().as_os_str())])
}

/// Drives a shell: its terminal, its size, Ctrl-C, and its exit status.
fn drive_a_shell(mut s: Session, tty: &str) {
    s.expect("# ", BOOT);
    s.type_keys("tty; stty size\r");
    s.expect(tty, Duration::from_secs(30));
    s.expect("24 80", Duration::from_secs(30));
    s.type_keys("sleep 60\r");
    std::thread::sleep(Duration::from_secs(2));
    let began = Instant::now();
    s.type_keys("\x03");
    s.type_keys("echo after-$((6*7))\r");
    s.expect("after-42", Duration::from_secs(40));
    assert!(
        began.elapsed() < Duration::from_secs(45),
        "Ctrl-C did not stop sleep"
    );
    s.type_keys("exit 3\r");
    let status = s.wait_within(Duration::from_secs(60));
    assert_eq!(status.code(), Some(3), "{status:?}; screen:\n{}", s.seen);
    s.assert_restored();
}

#[test]
fn an_interactive_shell_in_a_vm() {
    let home = tempfile::tempdir().unwrap();
    drive_a_shell(
        session(&home, &["--mode", "vm", "-it", "--", "sh"], false),
        "/dev/ttyS0",
    );
}

#[test]
fn an_interactive_shell_in_a_container_on_a_cgroup_v2_host() {
    let home = tempfile::tempdir().unwrap();
    drive_a_shell(
        session(&home, &["--mode", "container", "-it", "--", "sh"], true),
        "/dev/pts/0",
    );
}

#[test]
fn input_reaches_a_vm_with_i_without_echo_and_ends_with_eof() {
    let home = tempfile::tempdir().unwrap();
    let mut s = session(
        &home,
        &[
            "--mode",
            "vm",
            "-i",
            "--",
            "sh",
            "-c",
            "echo ready; read x; echo got-$x; read y || echo at-eof",
        ],
        false,
    );
    s.expect("ready", BOOT);
    s.type_keys("hello\r");
    let shown = s.expect("got-hello", Duration::from_secs(60));
    // The launcher's terminal echoes the line once; the guest's console must not echo it again.
    assert_eq!(shown.matches("hello").count(), 2, "{shown:?}");
    s.type_keys("\x04");
    s.expect("at-eof", Duration::from_secs(60));
    let status = s.wait_within(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{status:?}; screen:\n{}", s.seen);
}

#[test]
fn without_i_a_vm_reads_nothing() {
    let home = tempfile::tempdir().unwrap();
    let mut s = session(
        &home,
        &[
            "--mode",
            "vm",
            "--",
            "sh",
            "-c",
            "read x && echo read-something || echo read-nothing",
        ],
        false,
    );
    s.expect("read-nothing", BOOT);
    let status = s.wait_within(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{status:?}; screen:\n{}", s.seen);
}
