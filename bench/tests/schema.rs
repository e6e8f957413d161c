//! report.json of a real `sandbox bench --quick --modes container` run validates against
//! bench/schema/report.schema.json. Structure is asserted; numbers never are.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/report.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

fn errors(validator: &jsonschema::Validator, report: &Value) -> Vec<String> {
    validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

/// The `sandbox` binary next to this test's directory (target/<triple>/debug/sandbox).
fn sandbox_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SANDBOX_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sandbox");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p sandbox` first (or set SANDBOX_BIN)",
        bin.display()
    );
    bin
}

fn quick_container_report() -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let started = std::time::Instant::now();
    let output = Command::new(sandbox_binary())
        .args(["bench", "--quick", "--modes", "container", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    eprintln!(
        "sandbox bench --quick --modes container took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "sandbox bench failed: {stderr}\n{stdout}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    (dir, report)
}

#[test]
fn quick_container_run_validates_against_the_schema() {
    let validator = schema();
    let (dir, report) = quick_container_report();
    let errs = errors(&validator, &report);
    assert!(
        errs.is_empty(),
        "report.json does not match the schema:\n{}",
        errs.join("\n")
    );

    // Every scenario produced container figures, and the baselines are there.
    let measurements = report["measurements"].as_array().unwrap();
    for scenario in ["boot", "memory", "density", "disk", "net", "cpu", "syscall"] {
        assert!(
            measurements
                .iter()
                .any(|m| m["scenario"] == scenario && m["subject"].as_str().unwrap().starts_with("container")),
            "no container measurement for {scenario}"
        );
    }
    for (scenario, subject) in [
        ("cpu", "native"),
        ("syscall", "native"),
        ("disk", "native"),
        ("net", "native"),
        ("boot", "crun"),
        ("boot", "runc"),
        ("boot", "runsc"),
        ("memory", "runsc"),
        ("syscall", "runsc"),
        ("cpu", "runsc"),
        ("disk", "runsc/root"),
        ("disk", "runsc/volume"),
        ("net", "runsc"),
    ] {
        assert!(
            measurements
                .iter()
                .any(|m| m["scenario"] == scenario && m["subject"] == subject),
            "no {subject} measurement for {scenario}"
        );
    }
    assert!(
        measurements.iter().all(|m| m["stats"]["n"] == 3),
        "--quick measures 3 runs"
    );
    // The charts and the Markdown report exist, and the report opens with the environment.
    let out = dir.path().join("report");
    for chart in report["charts"].as_array().unwrap() {
        assert!(
            out.join(chart.as_str().unwrap()).is_file(),
            "missing chart {chart}"
        );
    }
    assert!(!report["charts"].as_array().unwrap().is_empty());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.starts_with("# sandbox bench report\n\n## Environment"), "{md}");
    assert!(md.contains(report["environment"]["cpu_model"].as_str().unwrap()));
    // Every measured subject says how it was run: its command lines, and the OCI runtimes the
    // config.json they got.
    let subjects = report["subjects"].as_array().unwrap();
    for name in ["container", "native", "crun", "runc", "runsc"] {
        let s = subjects
            .iter()
            .find(|s| s["subject"] == name)
            .unwrap_or_else(|| panic!("no setup recorded for {name}"));
        assert!(!s["commands"].as_array().unwrap().is_empty(), "{name}: {s}");
    }
    let runsc = subjects.iter().find(|s| s["subject"] == "runsc").unwrap();
    assert!(
        runsc["configs"][0]["content"]["process"]["args"] == serde_json::json!(["/bin/true"]),
        "{runsc}"
    );
    assert!(
        md.contains("## How each subject was run") && md.contains("runsc --network=none run --bundle"),
        "{md}"
    );
}

#[test]
fn the_schema_rejects_a_report_missing_its_environment_or_with_a_bad_subject() {
    let validator = schema();
    let minimal = serde_json::json!({
        "schema_version": 2,
        "environment": {
            "place": "native", "place_description": "native (hardware KVM)", "cpu_model": "x",
            "cpus": 1, "memory_total_mib": 1, "host_kernel": "6.1", "kvm_kind": "hardware (svm)",
            "cgroup_layout": "v2", "sandbox_version": "0.1.0", "guest_kernel": null,
            "peers": [{"peer": "runc", "version": null, "install_hint": "apt-get install runc"}],
            "started_unix": 0
        },
        "config": {"scenarios": ["boot"], "modes": ["vm"], "peers": [], "runs": 1, "warmup": 0,
                   "quick": true, "out": "x", "image": "default"},
        "sizes": {"disk_mib": 1, "copy_up_mib": 1, "workload_seconds": 0.1, "density_container": 1, "density_vm": 1},
        "measurements": [{"scenario": "boot", "subject": "vm", "metric": "ready_ms", "unit": "ms",
                          "better": "lower", "place": "native", "samples": [1.0],
                          "stats": {"n": 1, "min": 1.0, "median": 1.0, "p95": 1.0, "max": 1.0, "mean": 1.0, "stddev": 0.0}}],
        "ratios": [],
        "targets": [
            {"name": "container-start", "description": "d", "unit": "ms", "measured": null, "limit": null, "met": null, "note": ""},
            {"name": "vm-boot", "description": "d", "unit": "ms", "measured": 1.0, "limit": 2.0, "met": true, "note": ""},
            {"name": "vmm-overhead", "description": "d", "unit": "MiB", "measured": null, "limit": 5.0, "met": null, "note": ""}
        ],
        "notes": [],
        "subjects": [{"subject": "runsc", "description": "gVisor", "settings": [{"name": "platform", "value": "ptrace"}],
                      "commands": [{"scenario": "boot", "purpose": "true", "argv": ["runsc", "--network=none", "run", "--bundle", "B", "ID"]}],
                      "configs": [{"name": "config.json", "content": {"ociVersion": "1.0.2"}}]}],
        "failures": [], "charts": ["boot-ready-ms.svg"], "duration_seconds": 1.0
    });
    assert!(
        errors(&validator, &minimal).is_empty(),
        "{:?}",
        errors(&validator, &minimal)
    );

    let mut no_env = minimal.clone();
    no_env.as_object_mut().unwrap().remove("environment");
    assert!(!errors(&validator, &no_env).is_empty());

    let mut bad_subject = minimal.clone();
    bad_subject["measurements"][0]["subject"] = "lxc".into();
    assert!(!errors(&validator, &bad_subject).is_empty());

    let mut both = minimal.clone();
    both["environment"]["peers"][0]["version"] = "runc 1.1".into();
    assert!(
        !errors(&validator, &both).is_empty(),
        "a peer is either installed or has a hint"
    );

    let mut no_command = minimal.clone();
    no_command["subjects"][0]["commands"][0]["argv"] = serde_json::json!([]);
    assert!(
        !errors(&validator, &no_command).is_empty(),
        "a command has a program"
    );

    let mut gvisor_variant = minimal.clone();
    gvisor_variant["measurements"][0]["subject"] = "runsc/volume".into();
    assert!(errors(&validator, &gvisor_variant).is_empty());

    let mut text_number = minimal;
    text_number["measurements"][0]["stats"]["median"] = "1.0".into();
    assert!(!errors(&validator, &text_number).is_empty());
}
