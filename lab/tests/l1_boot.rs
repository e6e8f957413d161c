//! Boots the real L1 (QEMU TCG, Debian cloud kernel, kvm_amd) with busybox standing in for the
//! `sandbox` binary, so the lab's own mechanics — arguments, output channels, exit status,
//! timeout, /dev/kvm — are tested independently of the rest of the workspace.

use sandbox_lab::{LabOptions, LabOutput};
use std::path::PathBuf;
use std::time::Duration;

/// A stand-in for `sandbox` in L1: runs its arguments as a busybox applet.
fn stand_in() -> (tempfile::TempDir, PathBuf) {
    assert!(
        std::path::Path::new("/bin/busybox").is_file(),
        "busybox-static is not installed: run `apt-get install busybox-static`"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sandbox");
    std::fs::write(&p, "#!/bin/busybox sh\nexec /bin/busybox \"$@\"\n").unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (dir, p)
}

fn lab(args: &[&str], timeout: Option<Duration>) -> LabOutput {
    let (_dir, bin) = stand_in();
    let opts = LabOptions {
        sandbox_bin: Some(bin),
        timeout,
        memory_mib: 1024,
        env: vec![("LAB_TEST".into(), "x 'y' $z".into())],
        tools: vec!["hyperfine".into()],
        ..LabOptions::default()
    };
    let start = std::time::Instant::now();
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
    let ended = sandbox_lab::qemu_run_captured(&args, &opts).expect("the lab runs");
    eprintln!(
        "lab run took {:.1} s (boot {:?})",
        start.elapsed().as_secs_f64(),
        ended.boot
    );
    LabOutput {
        status: ended.status,
        stdout: String::from_utf8_lossy(&ended.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&ended.stderr).into_owned(),
        environment: sandbox_lab::Environment::Lab,
        timed_out: ended.timed_out,
        elapsed: start.elapsed(),
        l1_boot: ended.boot,
    }
}

#[test]
fn l1_has_svm_kvm_passes_arguments_and_propagates_the_exit_status() {
    let script = "uname -r; grep -c -w svm /proc/cpuinfo; ls -l /dev/kvm; echo \"[$1] [$2]\"; echo \"[$LAB_TEST]\"; [ -t 1 ] || [ -t 2 ] || echo piped; hyperfine --version; echo to-stderr >&2; exit 3";
    let out = lab(&["sh", "-c", script, "sh", "a  'b'", "$HOME"], None);
    eprintln!("stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert_eq!(out.status, 3);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].ends_with("cloud-amd64"),
        "L1 runs the Debian cloud kernel: {lines:?}"
    );
    assert_ne!(
        lines[0],
        String::from_utf8_lossy(
            &std::process::Command::new("uname")
                .arg("-r")
                .output()
                .unwrap()
                .stdout
        )
        .trim()
    );
    assert_ne!(lines[1], "0", "L1's CPU has svm");
    assert!(
        lines[2].starts_with('c'),
        "/dev/kvm is a character device in L1: {lines:?}"
    );
    assert_eq!(lines[3], "[a  'b'] [$HOME]");
    assert_eq!(lines[4], "[x 'y' $z]", "--env reaches the command");
    assert_eq!(
        lines[5], "piped",
        "the command's stdout and stderr are pipes, not the serial terminals"
    );
    assert!(
        lines[6].starts_with("hyperfine "),
        "a dynamically linked --tool runs in L1: {lines:?}"
    );
    assert_eq!(out.stderr, "to-stderr\n");
}

#[test]
fn timeout_kills_l1() {
    let out = lab(&["sleep", "600"], Some(Duration::from_secs(8)));
    assert!(out.timed_out);
    assert_eq!(out.status, 124);
}
