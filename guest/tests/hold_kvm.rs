//! `sandbox-guest hold-kvm` (the lab's L1 helper) holds a VM and a vCPU open until killed, and
//! says so on stdout. Needs /dev/kvm (hardware or PVM: creating a VM and a vCPU is all it does).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn holds_a_vm_and_a_vcpu_until_killed() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "this test needs /dev/kvm (load kvm_intel, kvm_amd or kvm_pvm)"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox-guest"))
        .arg("hold-kvm")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("hold-kvm: holding an idle VM"), "{line:?}");
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(fds.contains(&"anon_inode:kvm-vm".to_string()), "{fds:?}");
    assert!(fds.contains(&"anon_inode:kvm-vcpu:0".to_string()), "{fds:?}");
    assert!(!status.success(), "it only ends when killed: {status}");
}
