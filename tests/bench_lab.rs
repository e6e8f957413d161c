//! `sandbox bench --quick --scenario boot` with both modes and every peer (crun, runc, runsc, both
//! QEMU configurations): natively where the host has hardware KVM, otherwise inside the lab
//! (`sandbox lab --tool ... --export ... -- bench`), the report brought back to the host.
//! Structure asserted, numbers never.
//!
//! The lab once froze in about one run out of eight here (L1's own text patching on every VM
//! create and destroy, under QEMU's multi-threaded TCG: see lab/README.md); L1 now holds an idle
//! VM open so that patching never happens, and every peer runs there too.

use sandbox_bench::{Place, Report, Scenario};
use sandbox_vmm::kvm_kind::{detect, KvmKind};
use std::process::Command;

#[test]
fn quick_boot_in_both_modes_with_every_peer() {
    for (tool, package) in [
        ("crun", "crun"),
        ("runc", "runc"),
        ("runsc", "runsc"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is needed by this test: run `apt-get install {package}`"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let host_out = dir.path().join("report");
    let bench_args = ["bench", "--quick", "--scenario", "boot"];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandbox"));
    // A stalled emulated host gets the run again, once (announced on stderr).
    cmd.env(sandbox_lab::RETRY_STALLED_ENV, "1");
    let native = matches!(detect(), KvmKind::Hardware { .. });
    if native {
        cmd.args(bench_args).arg("--out").arg(&host_out);
    } else {
        cmd.args([
            "lab",
            "--timeout",
            "900",
            "--tool",
            "crun",
            "--tool",
            "runc",
            "--tool",
            "runsc",
        ])
        .args([
            "--tool",
            "qemu-system-x86_64",
            "--include",
            "/usr/share/qemu:/usr/share/qemu",
        ])
        .arg("--export")
        .arg(format!("/root/bench:{}", host_out.display()))
        .arg("--")
        .args(bench_args)
        .args(["--out", "/root/bench"]);
    }
    let started = std::time::Instant::now();
    let o = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("{stdout}\n(took {:.0} s)", started.elapsed().as_secs_f64());
    assert!(
        o.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(host_out.join("report.json")).unwrap()).unwrap();
    let place = if native { Place::Native } else { Place::LabTcg };
    assert_eq!(report.environment.place, place);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    for (subject, metric) in [
        ("vm", "ready_ms"),
        ("vm", "ready_wall_ms"),
        ("vm", "true_wall_ms"),
        ("container", "ready_ms"),
        ("container", "true_wall_ms"),
        ("crun", "true_wall_ms"),
        ("runc", "true_wall_ms"),
        ("runsc", "true_wall_ms"),
        ("qemu-microvm", "ready_wall_ms"),
        ("qemu-microvm", "true_wall_ms"),
        ("qemu-microvm-default", "ready_wall_ms"),
        ("qemu-microvm-default", "true_wall_ms"),
    ] {
        let m = report
            .find(Scenario::Boot, subject, metric)
            .unwrap_or_else(|| panic!("no {subject} {metric} in the report"));
        assert_eq!(m.place, place);
        assert_eq!(m.samples.len(), 3);
    }
    // Both boot targets had both their sides measured in this one run, so both were judged.
    for name in ["container-start", "vm-boot"] {
        let t = report.targets.iter().find(|t| t.name == name).unwrap();
        assert!(t.met.is_some(), "{name}: {t:?}");
    }
    // The tuned QEMU's kernel format was measured in this run and is named; both QEMU
    // configurations and every runtime say exactly how they ran.
    let tuned = report.subject("qemu-microvm").expect("qemu-microvm's setup");
    assert!(
        tuned
            .settings
            .iter()
            .any(|s| s.name.starts_with("kernel format") && s.value.contains("measured in this run")),
        "{tuned:?}"
    );
    for name in [
        "vm",
        "qemu-microvm",
        "qemu-microvm-default",
        "crun",
        "runc",
        "runsc",
    ] {
        let s = report
            .subject(name)
            .unwrap_or_else(|| panic!("no setup recorded for {name}"));
        assert!(!s.commands.is_empty(), "{name}: {s:?}");
    }
    let default = report.subject("qemu-microvm-default").unwrap();
    assert!(
        default.commands[0]
            .argv
            .join(" ")
            .contains("-M microvm,acpi=off -accel"),
        "{default:?}"
    );
    assert!(host_out.join("report.md").is_file());
}
