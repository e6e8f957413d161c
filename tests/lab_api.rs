//! `sandbox_lab::run_sandbox`, the helper VM end-to-end tests call: it runs `sandbox ARGS`
//! natively where the host has hardware KVM and inside the lab's L1 otherwise, and says which.
//! Either way the command must see hardware KVM — the point of the helper.

use sandbox_lab::{Environment, HostKvm, LabOptions};

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

#[test]
fn run_sandbox_always_reaches_hardware_kvm_and_says_where() {
    let opts = LabOptions {
        sandbox_bin: Some(SANDBOX.into()),
        ..LabOptions::default()
    };
    let out = sandbox_lab::run_sandbox(&["doctor"], &opts).expect("doctor runs natively or in the lab");
    let host = HostKvm::detect();
    eprintln!(
        "host: {host}; ran {:?} in {:.1} s",
        out.environment,
        out.elapsed.as_secs_f64()
    );
    let expected = if host.needs_lab() {
        Environment::Lab
    } else {
        Environment::Native
    };
    assert_eq!(out.environment, expected);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let kvm = out
        .stdout
        .lines()
        .find(|l| l.contains("kvm "))
        .expect("doctor reports KVM");
    assert!(kvm.starts_with("ok") && kvm.contains("hardware KVM"), "{kvm}");
}
