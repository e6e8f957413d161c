//! `sandbox run --mode vm` end to end through the real CLI: `sandbox_lab::run_sandbox` runs it
//! natively where the host has hardware KVM and inside the lab's L1 otherwise (this CI host's
//! KVM is PVM), so every test here boots the real guest kernel — none can pass without it.
//! Each boot in the lab costs a few seconds of L1 boot; where a single VM can show several
//! things it does. Figures (boot phases, VMM RSS) are printed, never asserted.
//!
//! Needs the guest kernel built (`sandbox kernel build`, which `scripts/test` does), and for the
//! lab qemu-system-x86 and busybox-static (the lab names a missing one).

use sandbox_lab::{LabOptions, LabOutput};

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

fn vm(args: &[&str]) -> LabOutput {
    let opts = LabOptions {
        sandbox_bin: Some(SANDBOX.into()),
        progress: false,
        timeout: Some(std::time::Duration::from_secs(180)),
        ..LabOptions::default()
    };
    let mut full = vec!["run", "--mode", "vm"];
    full.extend_from_slice(args);
    let out = sandbox_lab::run_sandbox(&full, &opts).expect("sandbox runs natively or in the lab");
    eprintln!(
        "sandbox {} ({:?}, {:.1} s{}): status {}\n--- stdout\n{}--- stderr\n{}",
        full.join(" "),
        out.environment,
        out.elapsed.as_secs_f64(),
        out.l1_boot
            .map(|b| format!(", L1 boot {:.1} s", b.as_secs_f64()))
            .unwrap_or_default(),
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(!out.timed_out, "the VM run timed out");
    out
}

fn host_release() -> String {
    nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn info_in_a_two_cpu_vm_shows_the_guest_kernel_and_the_virtio_disks() {
    let out = vm(&["--cpus", "2", "--memory", "256M"]);
    assert_eq!(out.status, 0);
    // The whole stdout is the guest program's `info`: no kernel lines, no console noise.
    let info: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {:?}", out.stdout));
    let release = info["kernel_release"].as_str().unwrap();
    assert_ne!(release, host_release(), "the guest runs its own kernel");
    assert!(
        !release.ends_with("-cloud-amd64"),
        "not the lab's L1 kernel either: {release}"
    );
    let disks = info["block_devices"].as_array().expect("block_devices");
    let disk = |name: &str| {
        disks
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {disks:?}"))
    };
    assert_eq!(disk("vda")["read_only"], false, "the root disk is writable");
    assert_eq!(disk("vdb")["read_only"], true, "the plan disk is read-only");
    assert_eq!(info["cpus"]["online"], 2, "--cpus 2: {}", info["cpus"]);
    let total_kib = info["memory"]["total_kib"].as_u64().unwrap();
    assert!(
        (200 << 10..=256 << 10).contains(&total_kib),
        "--memory 256M, less what the kernel keeps: {total_kib} KiB"
    );
    assert!(
        info["hostname"].as_str().unwrap().starts_with("sbx-"),
        "{}",
        info["hostname"]
    );
    let root = info["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["target"] == "/")
        .expect("a root mount");
    assert_eq!(root["fstype"], "ext4", "{root}");
}

#[test]
fn exit_status_arguments_and_timings_cross_unchanged() {
    let script = r#"sandbox-guest ready > /dev/null; printf '[%s]\n' "$@"; exit 7"#;
    let out = vm(&[
        "--timings",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        "a  b",
        r#"c "d""#,
        "it's",
        "",
        "$HOME;*",
    ]);
    assert_eq!(out.status, 7, "the workload's status is the CLI's");
    assert_eq!(
        out.stdout.replace('\r', ""),
        "[a  b]\n[c \"d\"]\n[it's]\n[]\n[$HOME;*]\n",
        "every argument arrives as given, and stdout holds only the workload's output"
    );
    // --timings: the phases in order, each at or after the one before, then the VMM's RSS.
    let phases: Vec<(String, u64)> = out
        .stderr
        .lines()
        .filter(|l| l.contains(" µs  (+"))
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap().to_string();
            (name, words.next().unwrap().parse().unwrap())
        })
        .collect();
    let names: Vec<&str> = phases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "launcher-start",
            "disks-ready",
            "vm-built",
            "kernel-entry",
            "guest-init",
            "ready",
            "exit-reported",
            "exit"
        ],
        "{}",
        out.stderr
    );
    assert!(
        phases.windows(2).all(|w| w[0].1 <= w[1].1),
        "phases in time order: {phases:?}"
    );
    let rss = out
        .stderr
        .lines()
        .find(|l| l.starts_with("vmm-rss"))
        .expect("the VMM's RSS is reported");
    assert!(
        rss.contains("KiB") && rss.contains("guest memory excluded"),
        "{rss}"
    );
}

#[test]
fn a_guest_kernel_panic_is_a_crash_status_with_the_last_console_lines() {
    // The kernel cannot start the init it is told to use, and panics.
    let out = vm(&["--cmdline-extra", "init=/nonexistent", "--", "true"]);
    assert_eq!(
        out.status,
        sandbox_vmm::CRASH_EXIT_STATUS,
        "a distinct crash status"
    );
    assert!(out.stderr.contains("the guest kernel panicked"), "{}", out.stderr);
    assert!(
        out.stderr.contains("Kernel panic - not syncing"),
        "the panic's own lines are quoted: {}",
        out.stderr
    );
}
