//! A launcher that is not root: it runs the container in a user namespace (root inside mapped to
//! its own uid), and says clearly what it cannot do — cgroup limits, `--net host`, or anything at
//! all on a host with user namespaces disabled.

mod container_support;

use container_support::{Home, SharedBinary, SANDBOX};
use std::os::unix::process::CommandExt;
use std::process::Command;

const NOBODY: u32 = 65534;

/// Error lines of the launcher itself.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("sandbox: ")).collect()
}

/// A home whose default image was built by root, then handed to uid 65534 (the image store
/// itself needs root to unpack layers with their owners).
fn home_for_nobody() -> Home {
    let home = Home::new();
    home.run(&[], &["true"]).expect(0);
    let status = Command::new("chown")
        .args([
            "-R",
            &format!("{NOBODY}:{NOBODY}"),
            &home.path().to_string_lossy(),
        ])
        .status()
        .expect("chown runs");
    assert!(status.success());
    home
}

#[test]
fn a_non_root_launcher_runs_the_container_in_a_user_namespace() {
    let home = home_for_nobody();
    let binary = SharedBinary::new();
    let out = Command::new(&binary.path)
        .args(["run", "--mode", "container", "--hostname", "rootless", "--"])
        .args([
            "sh",
            "-c",
            "cat /proc/self/uid_map; id -u; hostname; grep CapEff /proc/self/status; exit 5",
        ])
        .env("SANDBOX_HOME", home.path())
        .env("HOME", home.path())
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["0", "65534", "1"], "root inside is uid 65534 outside");
    assert_eq!(lines[1], ["0"]);
    assert_eq!(lines[2], ["rootless"]);
    assert_eq!(lines[3], ["CapEff:", "00000000a80425fb"]);
    let runs = std::fs::read_dir(home.run_dir()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        runs, 0,
        "the run directory must be removed, overlay work dir included"
    );
}

#[test]
fn a_non_root_launcher_names_what_it_cannot_do() {
    let home = Home::new();
    let binary = SharedBinary::new();
    for (flags, named) in [
        (&["--memory", "64M"][..], "--memory"),
        (&["--net", "host"][..], "--net host"),
    ] {
        let out = Command::new(&binary.path)
            .args(["run", "--mode", "container"])
            .args(flags)
            .args(["--", "true"])
            .env("SANDBOX_HOME", home.path())
            .current_dir("/")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains(named) && errors[0].contains("needs root"),
            "{}",
            errors[0]
        );
    }
}

#[test]
fn a_non_root_launcher_without_user_namespaces_says_how_to_enable_them() {
    let home = Home::new();
    let mut cmd = Command::new(SANDBOX);
    cmd.args(["run", "--mode", "container", "--", "true"])
        .env("SANDBOX_HOME", home.path());
    // A host with user namespaces disabled, made for this process only: a user namespace of its
    // own in which uid 1000 is this (root) user, with the namespace limit set to 0 — the limit
    // is per user namespace, so the real host is untouched.
    // SAFETY: between fork and exec only raw system calls on stack data are made.
    unsafe {
        cmd.pre_exec(|| {
            use nix::fcntl::{open, OFlag};
            use nix::sys::stat::Mode;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)?;
            for (path, text) in [
                ("/proc/self/uid_map", "1000 0 1\n"),
                ("/proc/sys/user/max_user_namespaces", "0\n"),
            ] {
                let fd = open(path, OFlag::O_WRONLY, Mode::empty())?;
                nix::unistd::write(&fd, text.as_bytes())?;
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("uid 1000"), "{}", errors[0]);
    assert!(
        errors[0].contains("max_user_namespaces"),
        "the fix names the knob: {}",
        errors[0]
    );
    let runs = std::fs::read_dir(home.run_dir()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(runs, 0, "nothing may be created");
}
