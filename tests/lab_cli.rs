//! `sandbox lab` end to end: boots the real L1 (Debian's cloud kernel under QEMU TCG with
//! `-cpu max`) and runs the real `sandbox` binary in it. Each test boots L1 once (a few seconds);
//! the first test on a fresh machine also downloads the L1 kernel package (needs `apt-get update`
//! done) and builds the initramfs, both cached under `$SANDBOX_CACHE/lab`.
//!
//! Needs qemu-system-x86 and busybox-static; a missing one fails the test with the fix.

use std::process::{Command, Output};
use std::time::Instant;

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

fn lab(lab_opts: &[&str], args: &[&str]) -> Output {
    let start = Instant::now();
    let mut cmd = Command::new(SANDBOX);
    // A stalled emulated host gets the run again, once (announced) — except where the test is
    // about the timeout itself.
    if !lab_opts.contains(&"--timeout") {
        cmd.env(sandbox_lab::RETRY_STALLED_ENV, "1");
    }
    let out = cmd
        .arg("lab")
        .args(lab_opts)
        .arg("--")
        .args(args)
        .output()
        .expect("the sandbox binary runs");
    eprintln!(
        "sandbox lab {lab_opts:?} -- {args:?}: {} in {:.1} s\n--- stdout\n{}--- stderr\n{}",
        out.status,
        start.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn doctor_inside_l1_finds_hardware_svm_kvm() {
    let out = lab(&[], &["doctor"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let kvm = stdout
        .lines()
        .find(|l| l.contains("kvm "))
        .unwrap_or_else(|| panic!("no kvm line: {stdout}"));
    assert!(kvm.starts_with("ok"), "kvm_amd gives L1 a usable /dev/kvm: {kvm}");
    assert!(kvm.contains("hardware KVM") && kvm.contains("SVM"), "{kvm}");
}

#[test]
fn container_mode_runs_on_the_l1_kernel() {
    let out = lab(
        &[],
        &["run", "--mode", "container", "--", "sandbox-guest", "info"],
    );
    assert_eq!(out.status.code(), Some(0));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info prints JSON");
    let release = info["kernel_release"].as_str().unwrap();
    let host = text(&Command::new("uname").arg("-r").output().unwrap().stdout);
    assert!(
        release.ends_with("-cloud-amd64"),
        "L1 runs Debian's cloud kernel: {release}"
    );
    assert_ne!(release, host.trim(), "the container ran in L1, not on the host");
    assert_eq!(
        info["cgroup"]["version"], "v2",
        "L1 mounts a pure cgroup2 hierarchy"
    );
}

#[test]
fn exit_status_and_arguments_cross_l1_unchanged() {
    let out = lab(
        &[],
        &[
            "run",
            "--mode",
            "container",
            "--",
            "sh",
            "-c",
            "echo \"[$1]\"; echo err >&2; exit 3",
            "sh",
            "a  'b' $X",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "[a  'b' $X]\n");
    assert!(text(&out.stderr).contains("err\n"));
}

#[test]
fn timeout_kills_l1_and_says_so() {
    let start = Instant::now();
    let out = lab(
        &["--timeout", "1"],
        &["run", "--mode", "container", "--", "sleep", "600"],
    );
    assert_eq!(out.status.code(), Some(124));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("timed out") && stderr.contains("killed"),
        "{stderr}"
    );
    assert!(
        start.elapsed().as_secs() < 60,
        "the timeout stopped L1 long before the command would have"
    );
}

#[test]
fn missing_qemu_names_the_package() {
    let out = Command::new(SANDBOX)
        .args(["lab", "--", "doctor"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("the sandbox binary runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("qemu-system-x86_64 not found"), "{stderr}");
    assert!(stderr.contains("apt-get install qemu-system-x86"), "{stderr}");
}

#[test]
fn l1_without_svm_reports_the_kvm_amd_failure_with_the_console_tail() {
    let out = lab(&["--l1-cpu", "qemu64,-svm"], &["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("L1 failed to load kvm_amd"), "{stderr}");
    assert!(stderr.contains("L1 console tail"), "{stderr}");
    assert!(
        stderr.contains("dmesg tail"),
        "the console tail carries L1's dmesg: {stderr}"
    );
    assert!(
        stderr.contains("no hardware support for 'kvm_amd'"),
        "L1's kernel says why: {stderr}"
    );
    assert!(out.stdout.is_empty(), "the command never ran");
}

#[test]
fn bad_lab_options_name_the_value() {
    let out = Command::new(SANDBOX)
        .args(["lab", "--memory", "12K", "--", "doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("memory 0 MiB"),
        "{}",
        text(&out.stderr)
    );
    // A bare number is bytes: the refusal says so and shows the unit to add.
    let out = Command::new(SANDBOX)
        .args(["lab", "--memory", "4096", "--", "doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("4096 bytes") && err.contains("4096M"), "{err}");
}

/// Every file under `dir` (recursively).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
fn interrupt_stops_qemu_and_leaves_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(SANDBOX)
        .args(["lab", "--", "run", "--mode", "container", "--", "sleep", "600"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until QEMU runs (its run directory lives in our TMPDIR), then interrupt like Ctrl-C.
    let needle = tmp.path().to_string_lossy().into_owned();
    let start = Instant::now();
    while processes_mentioning(&needle)
        .iter()
        .all(|c| !c.contains("qemu-system"))
    {
        assert!(start.elapsed().as_secs() < 60, "QEMU never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        processes_mentioning(&needle).is_empty(),
        "QEMU outlived the interrupt"
    );
    assert!(
        files_under(tmp.path()).is_empty(),
        "left behind: {:?}",
        files_under(tmp.path())
    );
}

#[test]
fn a_finished_run_leaves_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(SANDBOX)
        .env(sandbox_lab::RETRY_STALLED_ENV, "1")
        .args(["lab", "--", "--version"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("sandbox "));
    assert!(
        files_under(tmp.path()).is_empty(),
        "left behind: {:?}",
        files_under(tmp.path())
    );
}

#[test]
fn images_option_ships_the_host_image_store() {
    let home = tempfile::tempdir().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(rootfs.path().join("bin")).unwrap();
    assert!(
        std::path::Path::new("/bin/busybox").is_file(),
        "busybox-static is not installed: run `apt-get install busybox-static`"
    );
    std::fs::copy("/bin/busybox", rootfs.path().join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.path().join("bin/cat")).unwrap();
    std::fs::write(rootfs.path().join("marker"), "from the host store\n").unwrap();
    let import = Command::new(SANDBOX)
        .args(["image", "import", "--name", "labtest"])
        .arg(rootfs.path())
        .env("SANDBOX_HOME", home.path())
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", text(&import.stderr));
    let out = Command::new(SANDBOX)
        .env(sandbox_lab::RETRY_STALLED_ENV, "1")
        .args([
            "lab",
            "--images",
            "--",
            "run",
            "--mode",
            "container",
            "--image",
            "labtest",
            "--",
            "cat",
            "/marker",
        ])
        .env("SANDBOX_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the host store\n");
}

#[test]
fn export_copies_an_l1_directory_to_the_host() {
    let host = tempfile::tempdir().unwrap();
    let dest = host.path().join("report");
    let export = format!("/tmp:{}", dest.display());
    let out = lab(
        &["--export", &export],
        &[
            "run",
            "--mode",
            "container",
            "--volume",
            "/tmp:/out",
            "--",
            "sh",
            "-c",
            "echo table > /out/report.md; mkdir /out/svg; printf '<svg/>' > /out/svg/a.svg; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "the command's status stands");
    assert_eq!(
        std::fs::read_to_string(dest.join("report.md")).unwrap(),
        "table\n"
    );
    assert_eq!(std::fs::read_to_string(dest.join("svg/a.svg")).unwrap(), "<svg/>");
}

#[test]
fn export_of_a_missing_directory_says_so() {
    let host = tempfile::tempdir().unwrap();
    let out = lab(
        &["--export", &format!("/nonexistent:{}", host.path().display())],
        &["--version"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot export /nonexistent") && stderr.contains("not a directory"),
        "{stderr}"
    );
}

#[test]
fn l1_finds_the_guest_kernel_the_host_built() {
    let host = Command::new(SANDBOX).args(["kernel", "path"]).output().unwrap();
    assert!(
        host.status.success(),
        "no guest kernel is built on the host: run `sandbox kernel build` first ({})",
        text(&host.stderr)
    );
    let host_vmlinux = text(&host.stdout)
        .lines()
        .find(|l| l.starts_with("vmlinux"))
        .unwrap()
        .to_string();
    let key = host_vmlinux.rsplit('/').nth(1).unwrap().to_string();
    let out = lab(&[], &["kernel", "path"]);
    assert_eq!(out.status.code(), Some(0));
    let l1 = text(&out.stdout);
    assert!(
        l1.contains(&format!("/var/cache/sandbox/kernel/{key}/vmlinux")),
        "L1 uses the host's build {key}: {l1}"
    );
}

#[test]
fn doctor_points_to_the_lab_exactly_when_the_host_needs_it() {
    let out = Command::new(SANDBOX).arg("doctor").output().unwrap();
    let stdout = text(&out.stdout);
    let kvm = stdout
        .lines()
        .skip_while(|l| !l.contains("kvm "))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    let host = sandbox_lab::HostKvm::detect();
    eprintln!("host: {host}\n{kvm}");
    assert_eq!(kvm.contains("sandbox lab"), host.needs_lab(), "{kvm}");
}

#[test]
fn memory_and_cpus_options_shape_l1() {
    let out = lab(
        &["--memory", "1G", "--cpus", "1"],
        &["run", "--mode", "container", "--", "sandbox-guest", "info"],
    );
    assert_eq!(out.status.code(), Some(0));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info prints JSON");
    assert_eq!(info["cpus"]["online"], 1, "{info}");
    let total_kib = info["memory"]["total_kib"].as_u64().unwrap();
    assert!(
        total_kib < 1024 * 1024 && total_kib > 512 * 1024,
        "L1 has about 1 GiB: {total_kib} KiB"
    );
}
