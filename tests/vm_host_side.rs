//! `sandbox run --mode vm` checks that need a process next to the VMM: a TCP server on the host
//! end of `--net host`, a look into the kept per-VM disk with debugfs, a SIGKILL and `sandbox
//! gc`. Each body runs where the host has hardware KVM: here when it has, else inside the lab's
//! L1 through `sandbox_lab::testing::delegate_with` (this test binary, filtered to that test),
//! with the real `sandbox` CLI shipped next to it (debug sections stripped, to keep L1's
//! initramfs small) and debugfs as a lab tool. Either way the body drives the real CLI.
//!
//! Needs the guest kernel built, binutils (`strip`) and e2fsprogs (`debugfs`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sandbox_lab::testing::{delegate_with, Place};
use sandbox_lab::{Include, LabOptions};

/// Where the stripped CLI goes in L1, and the variable naming it for the body.
const L1_CLI: &str = "/opt/sandbox-test/sandbox";
const CLI_ENV: &str = "SANDBOX_TEST_CLI";

/// Runs the body here, or has it run in L1; true when it already ran (and passed) in L1.
fn ran_in_lab(test: &str) -> bool {
    let scratch = tempfile::tempdir().unwrap();
    let stripped = scratch.path().join("sandbox");
    let opts = if sandbox_lab::HostKvm::detect().needs_lab() {
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(env!("CARGO_BIN_EXE_sandbox"))
            .status()
            .expect("strip is not installed: run `apt-get install binutils`");
        assert!(status.success(), "strip failed on the sandbox binary");
        LabOptions {
            progress: false,
            timeout: Some(Duration::from_secs(240)),
            include: vec![Include {
                host: stripped,
                l1_path: L1_CLI.into(),
            }],
            tools: vec!["debugfs".into()],
            env: vec![
                (CLI_ENV.into(), L1_CLI.into()),
                // The CLI finds the guest program the lab ships at /bin/sandbox-guest.
                ("SANDBOX_GUEST_BIN".into(), "/bin/sandbox-guest".into()),
            ],
            ..LabOptions::default()
        }
    } else {
        LabOptions::default()
    };
    match delegate_with(test, &opts).expect("the lab runs the test") {
        Place::Lab { .. } => true,
        Place::Here => false,
    }
}

fn cli() -> PathBuf {
    std::env::var_os(CLI_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sandbox")))
}

/// Runs the CLI with `home` as `$SANDBOX_HOME` (each test its own, so tests running side by side
/// natively see only their own run directories).
fn sandbox(home: &Path, args: &[&str]) -> Output {
    let start = Instant::now();
    let out = Command::new(cli())
        .args(args)
        .env("SANDBOX_HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("the sandbox CLI runs");
    eprintln!(
        "sandbox {} ({:.1} s): {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        start.elapsed().as_secs_f64(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn debugfs_cat(disk: &Path, file: &str) -> Option<String> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {file}")])
        .arg(disk)
        .output()
        .expect("debugfs is not installed: run `apt-get install e2fsprogs`");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.success() && !err.contains("File not found")).then_some(text)
}

fn run_dirs(home: &Path) -> Vec<PathBuf> {
    let root = home.join("run");
    std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn tap_exists(id: &str) -> bool {
    Path::new("/sys/class/net")
        .join(format!("{}{id}", sandbox_core::vm::TAP_PREFIX))
        .exists()
}

#[test]
fn root_disk_writes_stay_in_the_kept_disk_and_volumes_are_mounted() {
    if ran_in_lab("root_disk_writes_stay_in_the_kept_disk_and_volumes_are_mounted") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // Volumes: a host directory (made into an ext4 image, mounted read-only here) and an ext4
    // image file (attached as it is).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from a directory\n").unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("greeting.txt"), "hello from an image\n").unwrap();
    let image = home.path().join("volume.ext4");
    sandbox_disk::build_volume_from_dir(tree.path(), &image).unwrap();
    let dir_volume = format!("{}:/data:ro", dir.path().display());
    let image_volume = format!("{}:/img", image.display());
    let marker = format!("kept-{}", std::process::id());
    let script = format!(
        "cat /data/hello.txt /img/greeting.txt; \
         touch /data/new 2>/dev/null && echo data-writable || echo data-read-only; \
         echo {marker} > /marker && sync"
    );
    let out = sandbox(
        home.path(),
        &[
            "run",
            "--mode",
            "vm",
            "--keep-disk",
            "--volume",
            &dir_volume,
            "--volume",
            &image_volume,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).replace('\r', ""),
        "hello from a directory\nhello from an image\ndata-read-only\n"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept = stderr
        .lines()
        .find_map(|l| l.strip_prefix("sandbox: kept the VM's root disk: "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("the kept disk's path is printed: {stderr}"));
    assert!(kept.is_file(), "{}", kept.display());
    assert_eq!(
        debugfs_cat(&kept, "/marker").as_deref().map(str::trim),
        Some(marker.as_str()),
        "the write is in the kept disk"
    );
    let bases: Vec<PathBuf> = std::fs::read_dir(sandbox_disk::disk_cache())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ext4"))
        .collect();
    assert!(!bases.is_empty(), "a shared base disk exists");
    for base in bases {
        let seen = debugfs_cat(&base, "/marker");
        assert!(
            seen.as_deref().is_none_or(|t| !t.contains(&marker)),
            "the shared base {} is untouched",
            base.display()
        );
    }
    assert!(kept.starts_with(home.path()), "kept under $SANDBOX_HOME");
    assert!(run_dirs(home.path()).is_empty(), "run directory removed");
}

#[test]
fn net_host_carries_a_tcp_round_trip_and_the_tap_goes_with_the_vm() {
    if ran_in_lab("net_host_carries_a_tcp_round_trip_and_the_tap_goes_with_the_vm") {
        return;
    }
    // The host end: answers one line on any address (so on the tap's), giving up after a while
    // so a lost connection fails the test instead of hanging it.
    let listener = TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut conn, peer)) => {
                    conn.set_nonblocking(false).unwrap();
                    let mut line = String::new();
                    BufReader::new(&conn).read_line(&mut line).unwrap();
                    conn.write_all(format!("pong from host to {}: {line}", peer.ip()).as_bytes())
                        .unwrap();
                    return Some(peer);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        None
    });
    // Inside: the default gateway is the tap's host end.
    let script = format!(
        "hostname; gw=$(ip route | awk '/^default/ {{print $3}}'); echo \"gateway $gw\"; echo ping | nc $gw {port}"
    );
    let home = tempfile::tempdir().unwrap();
    let out = sandbox(
        home.path(),
        &["run", "--mode", "vm", "--net", "host", "--", "sh", "-c", &script],
    );
    let peer = server.join().unwrap().expect("the guest connected to the host");
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let gateway = stdout
        .lines()
        .find_map(|l| l.strip_prefix("gateway "))
        .expect("the guest printed its gateway");
    assert!(
        gateway.starts_with("10.213."),
        "the host end is on container mode's /30 block: {gateway}"
    );
    assert!(
        stdout.contains(&format!("pong from host to {}: ping", peer.ip())),
        "{stdout}"
    );
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sbx-"))
        .expect("the guest printed its hostname sbx-<id>");
    assert!(!tap_exists(id), "the tap sbxt{id} is gone");
    assert!(run_dirs(home.path()).is_empty(), "run directory removed");
}

/// Starts `sandbox run --mode vm --net host -- sleep 600` and waits until its run directory and
/// tap exist; returns the process and the sandbox id.
fn start_sleeping_vm(home: &Path) -> (std::process::Child, String) {
    let mut child = Command::new(cli())
        .args(["run", "--mode", "vm", "--net", "host", "--", "sleep", "600"])
        .env("SANDBOX_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("the sandbox CLI starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let dirs = run_dirs(home);
        if let Some(id) = dirs
            .first()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|id| tap_exists(id))
        {
            assert_eq!(dirs.len(), 1, "one run directory: {dirs:?}");
            assert!(dirs[0].join("root.ext4").is_file(), "the per-VM disk is in it");
            return (child, id);
        }
        assert!(Instant::now() < deadline, "no VM with a tap after 120 s");
        assert!(child.try_wait().unwrap().is_none(), "the VM ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_ends_the_vm_cleanly_and_gc_cleans_up_after_sigkill() {
    if ran_in_lab("sigterm_ends_the_vm_cleanly_and_gc_cleans_up_after_sigkill") {
        return;
    }
    let home = tempfile::tempdir().unwrap();

    // SIGTERM: the VMM ends the VM, exits 128+15 and removes everything itself.
    let (child, id) = start_sleeping_vm(home.path());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!("SIGTERM: {out:?}");
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    assert!(!tap_exists(&id), "the tap is gone");
    assert!(run_dirs(home.path()).is_empty(), "the run directory is gone");

    // SIGKILL: the kernel removes the tap with its last descriptor; the run directory (with
    // the per-VM disk) stays until `sandbox gc` finds its owner gone.
    let (mut child, id) = start_sleeping_vm(home.path());
    let dir = home.path().join("run").join(&id);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!tap_exists(&id), "the tap went with the VMM");
    assert!(dir.exists(), "SIGKILL leaves the run directory");
    let out = sandbox(home.path(), &["gc"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&id),
        "gc names the sandbox it cleaned"
    );
    assert!(!dir.exists(), "gc removed the run directory and the disk in it");
}
