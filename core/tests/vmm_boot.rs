//! End-to-end boots of the real guest kernel through the VMM library, for what the CLI-level
//! tests (`tests/vm_*.rs` at the workspace root) do not cover: a guest power-off without a
//! reported status. They need hardware KVM: each runs its body here when the host has it, and
//! otherwise inside the lab's L1 through `sandbox_lab::testing::delegate` (this test binary,
//! filtered to that one test) — never skipped.
//!
//! Inputs: the kernel is the built guest kernel (`sandbox_kernel::cached()`; the lab ships it into
//! L1); the root disk is `$SANDBOX_CACHE/vmm-test-root.ext4` — an ext4 image with
//! `/usr/bin/sandbox-guest` and busybox (`sh`, `poweroff`, ...), made on first use from the static
//! busybox and the built guest program. A missing input fails the test with its name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sandbox_protocol::paths::sandbox_cache;
use sandbox_protocol::{exit_device, Mode, Plan, ReadyChannel};
use sandbox_vmm::{run, DiskConfig, Ending, SerialSink, VmConfig, VmOutcome};

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
    sandbox_kernel::cached()
        .expect("the guest kernel is not built: run `sandbox kernel build`")
        .vmlinux
}

fn base_root() -> PathBuf {
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
    let guest = sandbox_protocol::paths::guest_binary().expect("the static sandbox-guest binary");
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
fn a_guest_power_off_ends_the_vm() {
    if sandbox_lab::testing::delegate("a_guest_power_off_ends_the_vm")
        .expect("the lab runs the test")
        .ran_in_lab()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (outcome, _, _) = boot(dir.path(), &["poweroff", "-f"], |_| {});
    assert_eq!(outcome.ending, Ending::PowerOff);
    assert_eq!(outcome.exit_status(), sandbox_vmm::CRASH_EXIT_STATUS);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}
