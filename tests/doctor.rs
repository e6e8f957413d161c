//! `sandbox doctor` on this host: the KVM kind and the cgroup layout it reports must match what
//! the host itself shows (/sys/module/kvm_pvm, /proc/cpuinfo, /proc/mounts), and `--json` parses.

use std::path::Path;
use std::process::Command;

fn doctor(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .arg("doctor")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "doctor wrote to stderr: {stderr}");
    (
        out.status.code().expect("doctor was killed"),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// What the host shows, independently of the code under test: (words in the text, JSON kind).
fn expected_kvm() -> (&'static str, &'static str) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let has = |flag: &str| {
        cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|w| w == flag))
    };
    if !Path::new("/dev/kvm").exists() {
        ("/dev/kvm is absent", "absent")
    } else if Path::new("/sys/module/kvm_pvm").exists() {
        ("PVM", "pvm")
    } else if has("vmx") {
        ("hardware KVM (Intel VMX)", "hardware")
    } else if has("svm") {
        ("hardware KVM (AMD SVM)", "hardware")
    } else {
        ("neither kvm_pvm nor vmx/svm", "unknown")
    }
}

fn expected_layout() -> &'static str {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let fstypes: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    match (fstypes.contains(&"cgroup"), fstypes.contains(&"cgroup2")) {
        (true, true) => "hybrid",
        (true, false) => "v1",
        (false, true) => "v2",
        (false, false) => "none",
    }
}

fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
}

#[test]
fn doctor_names_this_hosts_kvm_kind_and_cgroup_layout() {
    let (status, text) = doctor(&[]);
    println!("{text}");
    let (kvm_words, _) = expected_kvm();
    assert!(
        line(&text, "kvm").contains(kvm_words),
        "expected {kvm_words:?} in:\n{text}"
    );
    let cgroups = line(&text, "cgroups");
    assert!(
        cgroups.contains(&format!("layout {}", expected_layout())),
        "{cgroups}"
    );
    for name in [
        "userns",
        "overlayfs",
        "tun",
        "mkfs.ext4",
        "debugfs",
        "qemu",
        "busybox",
        "linux-source",
    ] {
        line(&text, name);
    }
    // Every line that is not ok is followed by its fix.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("warn") || l.starts_with("FAIL") {
            assert!(
                lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim_start().starts_with("fix: ")),
                "no fix after {l:?}"
            );
        }
    }
    assert!(status == 0 || status == 1, "exit status {status}");
}

#[test]
fn doctor_json_parses_and_agrees_with_the_host() {
    let (status, text) = doctor(&["--json"]);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let checks = json["checks"].as_array().expect("checks array");
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {text}"))
    };
    assert_eq!(find("kvm")["data"]["kind"], expected_kvm().1);
    assert_eq!(find("cgroups")["data"]["layout"], expected_layout());
    for check in checks {
        let verdict = check["verdict"].as_str().unwrap();
        assert!(["ok", "warn", "fail"].contains(&verdict), "{check}");
        assert_eq!(check["fix"].is_null(), verdict == "ok", "{check}");
    }
    let blocking = checks
        .iter()
        .any(|c| c["verdict"] == "fail" && c["needed_by"] == "both");
    assert_eq!(json["exit_status"], i32::from(blocking));
    assert_eq!(status, i32::from(blocking));
}
