//! End-to-end boots of the real guest kernel through the VMM. They need hardware KVM, so they are
//! `#[ignore]`d here (this host's KVM is PVM) and run natively on a hardware-KVM host, or inside
//! the lab with this test binary as the lab's `sandbox`:
//!
//! ```text
//! SANDBOX_BIN=target/x86_64-unknown-linux-gnu/debug/deps/boot-HASH \
//!   sandbox lab --include ROOT.ext4:/var/cache/sandbox/vmm-test-root.ext4 -- --ignored --test-threads=1
//! ```
//!
//! Inputs: the kernel is `$SANDBOX_VMM_KERNEL`, else `$SANDBOX_CACHE/vmm-test-vmlinux`, else the
//! built guest kernel in the sandbox cache (`kernel/*/vmlinux`); the root disk is `$SANDBOX_VMM_ROOT`, else
//! `$SANDBOX_CACHE/vmm-test-root.ext4` — an ext4 image with `/usr/bin/sandbox-guest` and busybox
//! (`sh`, `nproc`, `nc`, `sync`, `poweroff`), made on first use from the static busybox and the
//! built guest program. A missing input fails the test with its name.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sandbox_guest::paths::sandbox_cache;
use sandbox_guest::protocol::{exit_device, Mode, NetPlan, Plan, ReadyChannel};
use sandbox_vmm::{run, DiskConfig, Ending, NetConfig, SerialSink, VmConfig, VmOutcome};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(d);
        // Live on stderr too, so a hang shows how far the guest got.
        let _ = std::io::stderr().write_all(d);
        Ok(d.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

fn kernel() -> PathBuf {
    if let Some(p) = std::env::var_os("SANDBOX_VMM_KERNEL") {
        return PathBuf::from(p);
    }
    let pinned = sandbox_cache().join("vmm-test-vmlinux");
    if pinned.is_file() {
        return pinned;
    }
    let dir = sandbox_cache().join("kernel");
    let mut built: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("vmlinux"))
                .collect()
        })
        .unwrap_or_default();
    built.sort();
    built.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "no guest kernel: set SANDBOX_VMM_KERNEL or run `sandbox kernel build` (looked in {})",
            dir.display()
        )
    })
}

fn base_root() -> PathBuf {
    if let Some(p) = std::env::var_os("SANDBOX_VMM_ROOT") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "SANDBOX_VMM_ROOT={} is not a file", p.display());
        return p;
    }
    let p = sandbox_cache().join("vmm-test-root.ext4");
    if !p.is_file() {
        build_test_root(&p);
    }
    p
}

/// Makes the test root disk: static busybox (package busybox-static) with the applets the tests
/// use, the guest program at /usr/bin/sandbox-guest, made with mkfs.ext4 (package e2fsprogs);
/// written under a temporary name and renamed, so no half-made disk is ever found.
fn build_test_root(dest: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("busybox is not installed: run `apt-get install busybox-static`");
    let guest = sandbox_guest::paths::guest_binary().expect("the static sandbox-guest binary");
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    for dir in [
        "bin", "usr/bin", "dev", "proc", "sys", "tmp", "run", "etc", "root", "mnt",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "nproc", "nc", "sync", "poweroff", "echo", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::copy(&guest, root.join("usr/bin/sandbox-guest")).unwrap();
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let partial = dest.with_extension(format!("partial-{}", std::process::id()));
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-L", "sandbox-root", "-d"])
        .arg(root)
        .arg(&partial)
        .arg("64M")
        .status()
        .expect("mkfs.ext4 is not installed: run `apt-get install e2fsprogs`");
    assert!(status.success(), "mkfs.ext4 failed making the test root disk");
    std::fs::rename(&partial, dest).unwrap();
}

/// How long one boot may take before the watchdog stops it (a hang must fail, not block CI).
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `f` (a call to `run` on this thread) and sends this thread SIGTERM if it takes longer
/// than [`WATCHDOG`]: `run` holds SIGTERM blocked and turns it into an `Ending::Signal`.
fn with_watchdog<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let dog = std::thread::spawn(move || {
        if wait.recv_timeout(WATCHDOG).is_err() {
            // SAFETY: the target is the test thread, alive until it joins this thread below.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGTERM) };
        }
    });
    let out = f();
    let _ = done.send(());
    let _ = dog.join();
    out
}

/// Boots `command` on a private copy of the root disk; returns the outcome, the console text and
/// the copy (kept in `dir`).
fn boot(dir: &Path, command: &[&str], tweak: impl FnOnce(&mut VmConfig)) -> (VmOutcome, String, PathBuf) {
    let copy = dir.join("root.ext4");
    std::fs::copy(base_root(), &copy).unwrap();
    let mut config = VmConfig::new(
        kernel(),
        DiskConfig {
            path: copy.clone(),
            read_only: false,
        },
    );
    let mut plan = Plan::new(Mode::Vm, command.iter().map(|s| s.to_string()).collect());
    plan.ready = ReadyChannel::Port(exit_device::PORT);
    config.plan = Some(plan);
    let console = Capture::default();
    config.serial = SerialSink::Writer(Box::new(console.clone()));
    tweak(&mut config);
    let outcome = with_watchdog(|| run(config).expect("the VM boots"));
    assert!(
        !matches!(outcome.ending, Ending::Signal(_)),
        "the VM did not end within {WATCHDOG:?} and was stopped; console:\n{}",
        console.text()
    );
    let text = console.text();
    eprintln!("--- {:?}, {:?}", outcome.ending, outcome.timings);
    (outcome, text, copy)
}

#[test]
#[ignore = "needs hardware KVM and a guest kernel: run natively on such a host or in `sandbox lab`"]
fn info_shows_the_guest_kernel_and_virtio_disks() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, text, _) = boot(dir.path(), &[], |_| {});
    assert_eq!(outcome.ending, Ending::GuestExit(0));
    let json_start = text.find('{').expect("info prints JSON");
    // The first JSON document on the console (kernel lines may follow it).
    let info: serde_json::Value = serde_json::Deserializer::from_str(&text[json_start..])
        .into_iter()
        .next()
        .expect("a JSON document")
        .expect("valid JSON");
    let host = nix::sys::utsname::uname().unwrap();
    assert_ne!(
        info["kernel_release"].as_str(),
        host.release().to_str(),
        "a different kernel from the host's"
    );
    assert!(
        info["block_devices"].to_string().contains("vda"),
        "{}",
        info["block_devices"]
    );
    let t = outcome.timings;
    assert!(t.init_started_us.is_some() && t.kernel_entry_us.is_some());
}

#[test]
#[ignore = "needs hardware KVM and a guest kernel: run natively on such a host or in `sandbox lab`"]
fn exit_status_arguments_and_ready_cross_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let script = "sandbox-guest ready; echo \"a  b\" 'c \"d\"'; exit 7";
    let (outcome, text, _) = boot(dir.path(), &["sh", "-c", script], |_| {});
    assert_eq!(outcome.ending, Ending::GuestExit(7));
    assert_eq!(outcome.exit_status(), 7);
    assert!(text.contains("a  b c \"d\"\n"), "{text}");
    let t = outcome.timings;
    let (init, ready) = (
        t.init_started_us.unwrap(),
        t.ready_us.expect("the workload said ready"),
    );
    assert!(t.kernel_entry_us.unwrap() <= init && init <= ready && ready <= t.exit_reported_us.unwrap());
}

#[test]
#[ignore = "needs hardware KVM and a guest kernel: run natively on such a host or in `sandbox lab`"]
fn two_vcpus_show_as_two_cpus_inside() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, text, _) = boot(dir.path(), &["nproc"], |c| c.vcpus = 2);
    assert_eq!(outcome.ending, Ending::GuestExit(0));
    assert!(text.lines().any(|l| l.trim() == "2"), "{text}");
}

#[test]
#[ignore = "needs hardware KVM and a guest kernel: run natively on such a host or in `sandbox lab`"]
fn root_disk_writes_land_in_the_per_vm_copy_only() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("vmm-marker-{}", std::process::id());
    let script = format!("echo {marker} > /marker; sync");
    let (outcome, _, copy) = boot(dir.path(), &["sh", "-c", &script], |_| {});
    assert_eq!(outcome.ending, Ending::GuestExit(0));
    let contains = |p: &Path| {
        std::fs::read(p)
            .unwrap()
            .windows(marker.len())
            .any(|w| w == marker.as_bytes())
    };
    assert!(contains(&copy), "the write survives in the per-VM disk");
    assert!(!contains(&base_root()), "the shared base is untouched");
}

#[test]
#[ignore = "needs hardware KVM, a guest kernel and root (tap): run natively on such a host or in `sandbox lab`"]
fn net_host_gives_a_tcp_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    // Answers one connection, giving up with the VM's watchdog so a lost connection fails the test.
    let server = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + WATCHDOG;
        loop {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    let mut line = String::new();
                    BufReader::new(&conn).read_line(&mut line).unwrap();
                    conn.write_all(format!("pong: {line}").as_bytes()).unwrap();
                    return true;
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(_) => return false,
            }
        }
    });
    let script = format!("echo ping | nc 172.30.0.1 {port}");
    let tap = format!("sbxtt{}", std::process::id() % 100_000);
    let (outcome, text, _) = boot(dir.path(), &["sh", "-c", &script], |c| {
        c.net = Some(NetConfig {
            tap_name: tap.clone(),
            host_address: Ipv4Addr::new(172, 30, 0, 1),
            prefix_len: 30,
            guest_mac: [2, 0x53, 0x42, 0, 0, 2],
        });
        if let Some(plan) = c.plan.as_mut() {
            plan.net = Some(NetPlan {
                interface: "eth0".into(),
                address: Ipv4Addr::new(172, 30, 0, 2),
                prefix_len: 30,
                gateway: Some(Ipv4Addr::new(172, 30, 0, 1)),
            });
        }
    });
    let answered = server.join().unwrap();
    assert_eq!(outcome.ending, Ending::GuestExit(0));
    assert!(answered, "the guest never connected");
    assert!(text.contains("pong: ping"), "{text}");
    assert!(!Path::new("/sys/class/net").join(&tap).exists(), "tap removed");
}

#[test]
#[ignore = "needs hardware KVM and a guest kernel: run natively on such a host or in `sandbox lab`"]
fn a_guest_panic_is_reported_with_its_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, _, _) = boot(dir.path(), &["true"], |c| {
        c.cmdline_extra = "init=/nonexistent".into()
    });
    match &outcome.ending {
        Ending::Panic { last_lines } => {
            assert!(
                last_lines.iter().any(|l| l.contains("Kernel panic")),
                "{last_lines:?}"
            )
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(outcome.exit_status(), sandbox_vmm::CRASH_EXIT_STATUS);
}

#[test]
#[ignore = "needs hardware KVM and a guest kernel: run natively on such a host or in `sandbox lab`"]
fn a_guest_power_off_ends_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (outcome, _, _) = boot(dir.path(), &["poweroff", "-f"], |_| {});
    assert_eq!(outcome.ending, Ending::PowerOff);
    assert_eq!(outcome.exit_status(), sandbox_vmm::CRASH_EXIT_STATUS);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}
