//! Container isolation on a pure cgroup v2 host: L1 of the lab (this development host is v1
//! hybrid, where `tests/container_escapes.rs` runs the same probes). On v2 the device allowlist
//! is an eBPF program attached to the container's cgroup; the rest must hold the same way.
//!
//! Needs `qemu-system-x86` (the lab) and a built workspace.

use serde_json::Value;
use std::process::Command;

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

#[test]
fn the_container_probes_hold_on_cgroup_v2() {
    // One L1 boot, one container, one probe per line of output.
    let probes = "cat /proc/self/cgroup >&2; \
        sandbox-guest probe mknod --path /dev/kvm2 --dev c:10:232; \
        sandbox-guest probe mknod --path /dev/sda9 --dev b:8:0; \
        sandbox-guest probe mknod --path /null2 --dev c:1:3; \
        sandbox-guest probe open --path /dev/null; \
        sandbox-guest probe syscalls; \
        sandbox-guest probe session";
    let out = Command::new(SANDBOX)
        .env(sandbox_lab::RETRY_STALLED_ENV, "1")
        .args([
            "lab",
            "--",
            "run",
            "--mode",
            "container",
            "--",
            "sh",
            "-c",
            probes,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(out.status.success(), "{stderr}");
    let answers: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 6, "{stdout}");
    // L1's cgroup hierarchy is cgroup2 only; the KVM and disk nodes are refused by the eBPF
    // device program, the node on the root by nodev.
    for (i, errno) in [(0, "EPERM"), (1, "EPERM"), (2, "EACCES")] {
        assert_eq!(answers[i]["mknod"]["allowed"], true, "{}", answers[i]);
        assert_eq!(answers[i]["open"]["allowed"], false, "{}", answers[i]);
        assert_eq!(answers[i]["open"]["errno"], errno, "{}", answers[i]);
    }
    assert_eq!(answers[3]["allowed"], true, "/dev/null opens: {}", answers[3]);
    for call in [
        "io_uring_setup",
        "socket_af_vsock",
        "x32_getpid",
        "unshare_newuser",
    ] {
        assert_eq!(answers[4][call]["errno"], "EPERM", "{call}: {}", answers[4]);
    }
    assert_eq!(answers[5]["sid"], 1, "{}", answers[5]);
    // On a pure v2 host a process is in one hierarchy only: `0::/...`, and no v1 controllers.
    assert!(stderr.lines().any(|l| l.starts_with("0::")), "{stderr}");
    assert!(
        !stderr.contains(":memory:") && !stderr.contains(":pids:"),
        "L1 is pure v2: {stderr}"
    );
}
