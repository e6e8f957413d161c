//! `sandbox run --mode container`: what the workload sees inside (PID 1, hostname, network,
//! capabilities, seccomp, masked /proc) and that the host is left as it was.

mod container_support;

use container_support::Home;

/// The mount points of this (the host's) mount namespace.
fn host_mount_points() -> Vec<String> {
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect();
    points.sort();
    points
}

#[test]
fn no_command_runs_the_guest_info_in_the_default_image() {
    let home = Home::new();
    let before = host_mount_points();
    let run = home.run(&["--timings"], &[]);
    run.expect(0);
    let info: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("info prints one JSON line");
    assert_eq!(info["workload"], "info");
    // The workload is init's child: init is PID 1, so the workload is PID 2.
    assert_eq!(info["pid"], 2, "{info}");
    assert_eq!(info["hostname"], format!("sbx-{}", run.id()));
    for phase in ["namespaces-ready", "rootfs-ready", "exec", "exit"] {
        assert!(
            run.stderr.contains(phase),
            "--timings lacks {phase}: {}",
            run.stderr
        );
    }
    assert_eq!(host_mount_points(), before, "the host mount table changed");
    home.assert_no_leaks(run.id());
}

#[test]
fn init_is_pid_1_and_the_hostname_is_set() {
    let home = Home::new();
    let run = home.run(
        &["--hostname", "box-7"],
        &[
            "sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; echo $$",
        ],
    );
    run.expect(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0].trim(), "sandbox-guest init", "{}", run.stdout);
    assert_eq!(lines[1], "box-7");
    assert_ne!(lines[2], "1", "the workload must not be PID 1 (init is)");
    home.assert_no_leaks(run.id());
}

#[test]
fn exit_status_is_the_workloads() {
    let home = Home::new();
    let run = home.run(&[], &["sh", "-c", "exit 42"]);
    run.expect(42);
    home.assert_no_leaks(run.id());
    let run = home.run(&[], &["sh", "-c", "echo out; echo err >&2"]);
    run.expect(0);
    assert_eq!(run.stdout, "out\n");
    assert!(run.stderr.contains("err\n"));
}

#[test]
fn only_loopback_without_net_host() {
    let home = Home::new();
    let run = home.run(
        &[],
        &["sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate"],
    );
    run.expect(0);
    let names: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(names[0], "lo", "{}", run.stdout);
    assert_eq!(names.len(), 2, "only lo expected: {}", run.stdout);
    home.assert_no_leaks(run.id());
}

#[test]
fn capabilities_are_the_default_set_with_no_new_privs_and_seccomp() {
    let home = Home::new();
    let run = home.run(
        &[],
        &[
            "sh",
            "-c",
            "grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status",
        ],
    );
    run.expect(0);
    let field = |name: &str| {
        run.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} missing: {}", run.stdout))
            .to_string()
    };
    assert_eq!(field("CapEff"), "00000000a80425fb");
    assert_eq!(field("CapBnd"), "00000000a80425fb");
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2", "2 = filter mode");
    home.assert_no_leaks(run.id());
}

#[test]
fn refused_calls_fail_inside() {
    let home = Home::new();
    // mount and unshare are refused by the reduced capabilities and the seccomp filter; a
    // /proc/sys knob is read-only; /proc/timer_list is masked (reads empty).
    let run = home.run(
        &[],
        &[
            "sh",
            "-c",
            "mkdir -p /mnt; mount -t tmpfs none /mnt; echo mount=$?; \
             unshare -n true; echo unshare=$?; \
             echo 1 > /proc/sys/kernel/ns_last_pid; echo sysctl=$?; \
             echo timer_list=$(wc -c < /proc/timer_list)",
        ],
    );
    run.expect(0);
    assert_eq!(run.stdout, "mount=1\nunshare=1\nsysctl=1\ntimer_list=0\n");
    assert!(
        run.stderr
            .contains("unshare(0x40000000): Operation not permitted"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Read-only file system"), "{}", run.stderr);
    let host_timer_list = std::fs::read_to_string("/proc/timer_list").unwrap_or_default();
    assert!(
        !host_timer_list.is_empty(),
        "the host's /proc/timer_list has content, the masked one not"
    );
    home.assert_no_leaks(run.id());
}

#[test]
fn dev_has_the_oci_default_devices() {
    let home = Home::new();
    let run = home.run(
        &[],
        &[
            "sh",
            "-c",
            "ls /dev; head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok",
        ],
    );
    run.expect(0);
    for name in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue", "fd", "stdin",
    ] {
        assert!(
            run.stdout.lines().any(|l| l == name),
            "/dev/{name} missing: {}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("4\nnull-ok"), "{}", run.stdout);
    home.assert_no_leaks(run.id());
}

#[test]
fn env_workdir_and_user_reach_the_workload() {
    let home = Home::new();
    let run = home.run(
        &[
            "--env",
            "GREETING=hi there",
            "--workdir",
            "/tmp",
            "--user",
            "1000:1001",
        ],
        &["sh", "-c", "echo \"$GREETING\"; pwd; id -u; id -g"],
    );
    run.expect(0);
    assert_eq!(run.stdout, "hi there\n/tmp\n1000\n1001\n");
    home.assert_no_leaks(run.id());
}

#[test]
fn the_ready_line_is_timed() {
    let home = Home::new();
    let run = home.run(&["--timings"], &["sandbox-guest", "ready"]);
    run.expect(0);
    let phases: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(" µs  (+"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        phases,
        [
            "launcher-start",
            "namespaces-ready",
            "rootfs-ready",
            "exec",
            "ready",
            "exit"
        ],
        "{}",
        run.stderr
    );
    home.assert_no_leaks(run.id());
}

#[test]
fn orphans_are_reaped_inside() {
    let home = Home::new();
    // The inner sh exits at once, orphaning its sleep; init (PID 1) must reap it when it ends.
    let run = home.run(
        &[],
        &[
            "sh",
            "-c",
            "sh -c 'sleep 0.2 &'; sleep 1; zombies=0; \
             for s in /proc/[0-9]*/stat; do read -r line < $s 2>/dev/null || continue; \
             set -- $line; [ \"$3\" = Z ] && zombies=$((zombies+1)); done; echo zombies=$zombies",
        ],
    );
    run.expect(0);
    assert_eq!(run.stdout, "zombies=0\n");
    home.assert_no_leaks(run.id());
}

#[test]
fn descriptors_of_the_launcher_do_not_reach_the_container() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let home = Home::new();
    home.run(&[], &["true"]).expect(0); // builds the default image first
    let secret = std::fs::File::open("/proc/self/mountinfo").unwrap();
    let raw = secret.as_raw_fd();
    let mut cmd = home.command(&[
        "run",
        "--mode",
        "container",
        "--",
        "ls",
        "/proc/1/fd",
        "/proc/self/fd",
    ]);
    // SAFETY: dup2 is async-signal-safe; it gives the launcher an inheritable descriptor 37.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 37) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !stdout.lines().any(|l| l.trim() == "37"),
        "descriptor 37 leaked: {stdout}"
    );
}

#[test]
fn resource_limits_are_set_not_inherited_from_the_launcher() {
    let home = Home::new();
    let mut command = home.command(&["run", "--mode", "container", "--", "cat", "/proc/self/limits"]);
    // A launcher whose shell had `ulimit -c unlimited -s unlimited -n 100`.
    // SAFETY: between fork and exec only setrlimit, on stack data.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            use nix::sys::resource::{getrlimit, setrlimit, Resource};
            for (resource, soft) in [
                (Resource::RLIMIT_CORE, libc::RLIM_INFINITY),
                (Resource::RLIMIT_STACK, libc::RLIM_INFINITY),
                (Resource::RLIMIT_NOFILE, 100),
            ] {
                let (_, hard) = getrlimit(resource)?;
                setrlimit(resource, soft.min(hard), hard)?;
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let soft = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next())
            .unwrap_or_else(|| panic!("{name} missing: {stdout}"))
            .to_string()
    };
    assert_eq!(soft("Max core file size"), "0");
    assert_eq!(soft("Max stack size"), "8388608");
    assert_eq!(soft("Max open files"), "1024");
}
