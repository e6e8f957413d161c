//! `sandbox bench` from the command line, natively, container mode (boot, cpu, exec): the report deserialises into
//! `sandbox_bench::Report`, and bad input is refused naming the remedy.

use std::process::Command;

fn sandbox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sandbox"))
}

#[test]
fn quick_container_boot_and_cpu_write_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = sandbox()
        .args([
            "bench",
            "--quick",
            "--modes",
            "container",
            "--scenario",
            "boot,cpu,exec",
            "--peers",
            "none",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The summary table names the environment and each series.
    assert!(stdout.contains("sandbox bench — native"), "{stdout}");
    assert!(
        stdout.contains("ready_ms") && stdout.contains("ops_per_second"),
        "{stdout}"
    );
    let report: sandbox_bench::Report =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report.config.scenarios,
        vec![
            sandbox_bench::Scenario::Boot,
            sandbox_bench::Scenario::Cpu,
            sandbox_bench::Scenario::Exec
        ]
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let ready = report
        .find(sandbox_bench::Scenario::Boot, "container", "ready_ms")
        .expect("container boot measured");
    assert_eq!(ready.samples.len(), 3);
    assert!(report
        .find(sandbox_bench::Scenario::Cpu, "native", "ops_per_second")
        .is_some());
    let exec = report
        .find(sandbox_bench::Scenario::Exec, "container", "exec_ms")
        .expect("container exec measured");
    assert_eq!(exec.samples.len(), 3);
    assert!(
        report.measurements.iter().all(|m| m.subject != "vm"),
        "VM mode was not asked for"
    );
    for chart in &report.charts {
        assert!(out.join(chart).is_file(), "{chart}");
    }
    // Where the container's start goes, phase by phase, in one stacked chart.
    assert!(
        report.charts.iter().any(|c| c == "boot-phases.svg"),
        "{:?}",
        report.charts
    );
    let phases = std::fs::read_to_string(out.join("boot-phases.svg")).unwrap();
    for phase in ["namespaces-ready", "rootfs-ready", "exec", "ready"] {
        assert!(phases.contains(phase), "{phase} not in the phase chart");
    }
}

#[test]
fn bad_lists_and_a_foreign_out_dir_are_refused() {
    let o = sandbox()
        .args(["bench", "--scenario", "boot,fork"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("--scenario") && err.contains("\"fork\"") && err.contains("boot, memory"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let o = sandbox()
        .args(["bench", "--quick", "--scenario", "cpu", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("not empty") && err.contains("--out"), "{err}");
    assert!(
        dir.path().join("notes.txt").is_file(),
        "the user's file is left alone"
    );
}
