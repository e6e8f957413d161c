//! The escapes found by trying container mode as an attacker would, each as a probe run inside
//! a real container (`sandbox-guest probe`, see `guest/src/workloads/probe.rs`): device nodes,
//! the launcher's session and process group, terminal input injection, symlinks in an image
//! that point a volume at the host, and the syscalls the default seccomp profile refuses.
//! `docs/security.md` explains each; every one of these failed before its fix.
//!
//! Needs root, busybox-static and a built workspace (`cargo build --workspace`).

mod container_support;

use container_support::{Home, SANDBOX};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The probe's JSON line from a finished run.
fn probe_line(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from the probe: {stdout:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Runs `sandbox-guest probe ARGS` in a default container and returns its answer.
fn probe(home: &Home, flags: &[&str], args: &[&str]) -> Value {
    let mut command = vec!["sandbox-guest", "probe"];
    command.extend_from_slice(args);
    let run = home.run(flags, &command);
    run.expect(0);
    home.assert_no_leaks(run.id());
    probe_line(&run.stdout)
}

fn refused(answer: &Value, errno: &str) {
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(answer["errno"], errno, "{answer}");
}

#[test]
fn host_devices_made_with_mknod_cannot_be_opened() {
    let home = Home::new();
    // Where /dev is a tmpfs that allows device nodes, the device allowlist refuses: the host's
    // KVM, its first disk, a loop device, the console, a virtual terminal, FUSE.
    for (path, dev) in [
        ("/dev/kvm2", "c:10:232"),
        ("/dev/sda9", "b:8:0"),
        ("/dev/loop9", "b:7:0"),
        ("/dev/console9", "c:5:1"),
        ("/dev/tty9", "c:4:1"),
        ("/dev/fuse9", "c:10:229"),
    ] {
        let answer = probe(&home, &[], &["mknod", "--path", path, "--dev", dev]);
        assert_eq!(answer["mknod"]["allowed"], true, "{answer}");
        refused(&answer["open"], "EPERM");
    }
    // On the root file system (an overlay mounted nodev) no node opens at all.
    let answer = probe(&home, &[], &["mknod", "--path", "/null2", "--dev", "c:1:3"]);
    refused(&answer["open"], "EACCES");
}

#[test]
fn the_standard_devices_still_open() {
    let home = Home::new();
    for path in ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/ptmx", "/dev/full"] {
        let answer = probe(&home, &[], &["open", "--path", path]);
        assert_eq!(answer["allowed"], true, "{path}: {answer}");
    }
}

#[test]
fn the_workload_is_in_a_session_of_its_own() {
    let home = Home::new();
    let answer = probe(&home, &[], &["session"]);
    // The container's init (PID 1 of its namespace) leads the session the workload is in; the
    // launcher's session is not visible from inside at all.
    assert_eq!(answer["sid"], 1, "{answer}");
    assert_eq!(answer["pgid"], 1, "{answer}");
}

#[test]
fn a_signal_to_the_whole_group_stays_inside() {
    let home = Home::new();
    // The launcher runs in a process group of its own, as a shell would start it; before the
    // fix, kill(0, SIGUSR1) inside the container reached it (and killed it, leaving its run
    // directory and cgroups behind).
    let output = home
        .command(&[
            "run",
            "--mode",
            "container",
            "--trace",
            "--",
            "sandbox-guest",
            "probe",
            "kill-group",
            "--signal",
            "10",
        ])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("the sandbox binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{:?}\n{stdout}\n{stderr}",
        output.status
    );
    let answer = probe_line(&stdout);
    assert_eq!(answer["allowed"], true, "{answer}");
    let id = container_support::id_from_trace(&stderr).expect("a sandbox id");
    home.assert_no_leaks(&id);
}

#[test]
fn terminal_input_cannot_be_injected_into_the_hosts_terminal() {
    let home = Home::new();
    // The workload's stdin (with -i) or its stderr is a terminal of the host (the launcher's
    // own), as when a user runs `sandbox run` from a shell without -t.
    for (flags, fd) in [(&["-i"][..], "0"), (&[][..], "2")] {
        let pty = nix::pty::openpty(None, None).expect("a pty");
        let output = Command::new(SANDBOX)
            .args(["run", "--mode", "container"])
            .args(flags)
            .args(["--", "sandbox-guest", "probe", "tiocsti", "--fd", fd])
            .env("SANDBOX_HOME", home.path())
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(pty.slave))
            .output()
            .expect("the sandbox binary starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{stdout}");
        let answer = probe_line(&stdout);
        assert_eq!(answer["is_tty"], true, "fd {fd}: {answer}");
        refused(&answer, "EPERM");
        drop(pty.master);
    }
}

#[test]
fn the_default_seccomp_profile_is_an_allowlist() {
    let home = Home::new();
    let answer = probe(&home, &[], &["syscalls"]);
    for call in [
        "io_uring_setup",
        "socket_af_vsock",
        "personality_addr_no_randomize",
        "x32_getpid",
        "syscall_1000",
        "unshare_newuser",
    ] {
        refused(&answer[call], "EPERM");
    }
}

/// A root file system with busybox and `data -> TARGET`, imported as `name`.
fn import_with_symlink(home: &Home, name: &str, target: &Path) {
    let rootfs = tempfile::tempdir().unwrap();
    let bin = rootfs.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in ["sh", "ls", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    std::os::unix::fs::symlink(target, rootfs.path().join("data")).unwrap();
    let out = home
        .command(&["image", "import", rootfs.path().to_str().unwrap(), "--name", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn device_nodes_shipped_in_an_image_do_not_open() {
    let home = Home::new();
    let rootfs = tempfile::tempdir().unwrap();
    let bin = rootfs.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
    // The host's KVM and its first disk, as nodes any user may open.
    for (name, kind, major, minor) in [("kvm", libc::S_IFCHR, 10, 232), ("disk", libc::S_IFBLK, 8, 0)] {
        nix::sys::stat::mknod(
            &rootfs.path().join(name),
            nix::sys::stat::SFlag::from_bits_truncate(kind),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
        std::fs::set_permissions(
            rootfs.path().join(name),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
    }
    let dir = rootfs.path().to_str().unwrap();
    // Refused by default, naming the entry and the flag.
    let out = home
        .command(&["image", "import", dir, "--name", "nodes"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--allow-devices"), "{stderr}");
    // Imported on purpose, the nodes still open nothing, for root or another user.
    let out = home
        .command(&["image", "import", dir, "--name", "nodes", "--allow-devices"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for user in [&[][..], &["--user", "1000"][..]] {
        for node in ["/kvm", "/disk"] {
            let flags: Vec<&str> = [&["--image", "nodes"][..], user].concat();
            let answer = probe(&home, &flags, &["open", "--path", node]);
            assert_eq!(answer["allowed"], false, "{node} {user:?}: {answer}");
        }
    }
}

#[test]
fn a_volume_behind_an_image_symlink_stays_inside_the_root() {
    let home = Home::new();
    let host = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("marker"), "from the volume\n").unwrap();
    // Both an absolute host path and one under the old root's name (what pivot_root used to
    // leave reachable) must resolve inside the container's root.
    for (name, target) in [
        ("abs", host.path().to_path_buf()),
        (
            "old",
            Path::new("/.sandbox-oldroot").join(host.path().strip_prefix("/").unwrap()),
        ),
    ] {
        import_with_symlink(&home, name, &target);
        let volume = format!("{}:/data/newdir/deeper", source.path().display());
        let run = home.run(
            &["--image", name, "--volume", &volume],
            &["cat", "/data/newdir/deeper/marker"],
        );
        run.expect(0);
        assert_eq!(run.stdout, "from the volume\n");
        assert!(
            !host.path().join("newdir").exists(),
            "the launcher created {}/newdir on the host",
            host.path().display()
        );
        home.assert_no_leaks(run.id());
    }
}

#[test]
fn volumes_on_kernel_filesystems_are_refused() {
    let home = Home::new();
    let source = tempfile::tempdir().unwrap();
    for target in ["/proc/x", "/sys", "/dev/shm"] {
        let volume = format!("{}:{target}", source.path().display());
        let run = home.run(&["--volume", &volume], &["true"]);
        assert_eq!(run.code(), 2, "{target}: {}", run.stderr);
        assert!(run.stderr.contains(target), "{}", run.stderr);
        assert!(run.stderr.contains("somewhere else"), "{}", run.stderr);
    }
}
