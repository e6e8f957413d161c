//! VM mode end to end, through `sandbox_lab::run_sandbox`: natively where this host has hardware
//! KVM, inside the lab's L1 otherwise (this host: PVM). Either way the guest really boots; the
//! environment is printed, and a test never passes without running the guest.
//!
//! Needs a built guest kernel (`sandbox kernel build`, which CI runs before the tests).

use sandbox_lab::{Environment, HostKvm, LabOptions, LabOutput};

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

fn vm(args: &[&str]) -> LabOutput {
    let opts = LabOptions {
        sandbox_bin: Some(SANDBOX.into()),
        ..LabOptions::default()
    };
    let mut full = vec!["run", "--mode", "vm"];
    full.extend_from_slice(args);
    let out = sandbox_lab::run_sandbox(&full, &opts).expect("sandbox runs natively or in the lab");
    eprintln!(
        "{:?} {full:?}: status {} in {:.1} s\n--- stdout\n{}--- stderr\n{}",
        out.environment,
        out.status,
        out.elapsed.as_secs_f64(),
        out.stdout,
        out.stderr
    );
    let expected = if HostKvm::detect().needs_lab() {
        Environment::Lab
    } else {
        Environment::Native
    };
    assert_eq!(out.environment, expected);
    out
}

#[test]
fn vm_info_shows_the_guest_kernel() {
    let out = vm(&["--", "sandbox-guest", "info"]);
    assert_eq!(out.status, 0);
    let json = out
        .stdout
        .find('{')
        .map(|i| &out.stdout[i..])
        .expect("info prints JSON");
    let info: serde_json::Value = serde_json::Deserializer::from_str(json)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let release = info["kernel_release"].as_str().unwrap();
    assert!(
        !release.contains("cloud-amd64"),
        "the guest kernel, not L1's: {release}"
    );
    assert_eq!(info["machine"], "x86_64");
}

#[test]
fn vm_exit_status_and_arguments_cross_unchanged() {
    let out = vm(&["--", "sh", "-c", "echo \"[$1]\"; exit 3", "sh", "a  'b' $X"]);
    assert_eq!(out.status, 3);
    assert!(out.stdout.contains("[a  'b' $X]\n"), "{}", out.stdout);
}

#[test]
fn vm_net_host_gives_eth0_an_address_and_a_default_route() {
    let out = vm(&[
        "--net",
        "host",
        "--",
        "sh",
        "-c",
        "ip -4 addr show eth0; ip route",
    ]);
    assert_eq!(out.status, 0);
    assert!(out.stdout.contains("scope global eth0"), "{}", out.stdout);
    assert!(out.stdout.contains("default via"), "{}", out.stdout);
}

#[test]
fn vm_mode_runs_directly_exactly_where_the_lab_is_not_needed() {
    let host = HostKvm::detect();
    let out = std::process::Command::new(SANDBOX)
        .args(["run", "--mode", "vm", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if host.needs_lab() {
        assert_ne!(out.status.code(), Some(0), "{host}: {stderr}");
        assert!(
            stderr.contains("sandbox lab"),
            "the refusal points to the lab: {stderr}"
        );
    } else {
        assert_eq!(out.status.code(), Some(0), "{host}: {stderr}");
    }
}

#[test]
fn bench_in_the_lab_measures_both_modes_and_exports_its_report() {
    // Through the lab on any host: both modes under the same emulation.
    let host = tempfile::tempdir().unwrap();
    let dest = host.path().join("report");
    let out = std::process::Command::new(SANDBOX)
        .env(sandbox_lab::RETRY_STALLED_ENV, "1")
        .args(["lab", "--timeout", "400", "--export"])
        .arg(format!("/root/bench:{}", dest.display()))
        .args([
            "--",
            "bench",
            "--quick",
            "--runs",
            "1",
            "--scenario",
            "boot,exec",
            "--peers",
            "none",
            "--out",
            "/root/bench",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let report = std::fs::read_to_string(dest.join("report.md")).expect("the report came back from L1");
    assert!(report.contains("vm") && report.contains("container"), "{report}");
    for subject in ["vm", "container"] {
        let row = format!("| {subject} | exec_ms |");
        assert!(report.contains(&row), "no {row} in {report}");
    }
    assert!(dest.join("report.json").is_file());
}
