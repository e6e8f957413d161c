//! virtio-vsock end to end: a real guest kernel's AF_VSOCK sockets against host unix sockets,
//! through the VMM library. It needs hardware KVM: the body runs here when the host has it, and
//! otherwise inside the lab's L1 through `sandbox_lab::testing::delegate` (this test binary,
//! filtered to this test) — never skipped.
//!
//! One VM runs `sandbox-guest vsock-echo --port 7000 --count 22` (host-initiated streams through
//! `<uds>` and `CONNECT 7000`), then `sandbox-guest vsock-echo --connect-host 5000` (a
//! guest-initiated stream to the host's `<uds>_5000`). Port 7000, not 1024: in a VM with a vsock
//! device the guest's init runs the guest agent on 1024. The host side checks every byte, a
//! refused port, and that the socket file is gone when the VM ends; it prints connect and
//! round-trip times and bulk throughput (in the lab: nested KVM under TCG, so orders of
//! magnitude off real hardware).
//!
//! Inputs: the built guest kernel (`sandbox_kernel::cached()`, shipped into L1 by the lab), and a
//! root disk made per run from the static busybox and the built `sandbox-guest`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox_protocol::{exit_device, Mode, Plan, ReadyChannel, GUEST_PATH_IN_IMAGE};
use sandbox_vmm::{run, DiskConfig, Ending, SerialSink, VmConfig, VsockConfig};

/// Timed host-initiated connections (connect + a 1-byte echo each).
const TIMED_CONNECTIONS: usize = 20;
/// 1-byte round trips on one open connection.
const PINGS: usize = 100;
/// Bytes echoed in the bulk phase.
const BULK: usize = 4 << 20;
/// How long the whole VM may run before the watchdog stops it.
const WATCHDOG: Duration = Duration::from_secs(300);

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(d);
        let _ = std::io::stderr().write_all(d);
        Ok(d.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A root disk with busybox (`sh`) and the guest program at its image path.
fn build_root(dir: &Path) -> PathBuf {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("busybox is not installed: run `apt-get install busybox-static`");
    let guest = sandbox_protocol::paths::guest_binary().expect("the static sandbox-guest binary");
    let tree = dir.join("tree");
    for d in [
        "bin", "usr/bin", "dev", "proc", "sys", "tmp", "run", "etc", "root",
    ] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::copy(busybox, tree.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh")).unwrap();
    std::fs::copy(&guest, tree.join(GUEST_PATH_IN_IMAGE.trim_start_matches('/'))).unwrap();
    let disk = dir.join("root.ext4");
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-L", "sandbox-root", "-d"])
        .arg(&tree)
        .arg(&disk)
        .arg("64M")
        .status()
        .expect("mkfs.ext4 is not installed: run `apt-get install e2fsprogs`");
    assert!(status.success(), "mkfs.ext4 failed");
    disk
}

/// Runs `f` (a call to `run` on this thread) and sends this thread SIGTERM after [`WATCHDOG`]:
/// `run` holds SIGTERM blocked and turns it into an `Ending::Signal`.
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

/// A host-initiated connection: connects to `uds`, asks for `port`, returns the reader (past
/// the `OK` line) and the host port it names, or `None` when the VMM closed the socket (the
/// guest refused).
fn connect(uds: &Path, port: u32) -> Option<(BufReader<UnixStream>, u32)> {
    // The VMM creates the socket while it builds the VM: wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s = loop {
        match UnixStream::connect(uds) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ),
                    "connecting to {}: {e}",
                    uds.display()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the VMM never listened on {}: {e}", uds.display()),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Ok(_) => {
            let host_port = line
                .strip_prefix("OK ")
                .and_then(|p| p.trim_end_matches('\n').parse().ok())
                .unwrap_or_else(|| panic!("expected `OK <port>`, got {line:?}"));
            Some((r, host_port))
        }
        Err(e) => panic!("reading the answer to CONNECT: {e}"),
    }
}

fn finish(mut r: BufReader<UnixStream>) {
    r.get_ref().shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the echo: {rest:?}");
}

fn echo_byte(r: &mut BufReader<UnixStream>, b: u8) {
    r.get_mut().write_all(&[b]).unwrap();
    let mut got = [0u8; 1];
    r.read_exact(&mut got).unwrap();
    assert_eq!(got[0], b);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut samples: Vec<f64>) -> String {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{name}: median {:.2} ms, min {:.2}, max {:.2} (n={})",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    )
}

/// The host side, while the VM runs; returns the measurements as lines.
fn host_side(uds: PathBuf, guest_listener: UnixListener) -> Vec<String> {
    let mut report = Vec::new();
    // A port nobody listens on: the VMM closes the socket without `OK`.
    assert!(connect(&uds, 9999).is_none(), "a refused port gets no OK");

    // Host-initiated: retry until the guest listens on 7000.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut first, port) = loop {
        if let Some(c) = connect(&uds, 7000) {
            break c;
        }
        assert!(Instant::now() < deadline, "the guest never listened on port 7000");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(port >= 1 << 30, "host ports are assigned from 2^30: {port}");
    echo_byte(&mut first, b'!');
    finish(first);

    let (mut connects, mut totals) = (Vec::new(), Vec::new());
    for i in 0..TIMED_CONNECTIONS {
        let t0 = Instant::now();
        let (mut c, _) = connect(&uds, 7000).expect("the guest accepts");
        let t1 = Instant::now();
        echo_byte(&mut c, i as u8);
        let t2 = Instant::now();
        finish(c);
        connects.push(ms(t1 - t0));
        totals.push(ms(t2 - t0));
    }
    report.push(summary("connect (CONNECT → OK)", connects));
    report.push(summary("connect + 1-byte echo", totals));

    let (mut c, _) = connect(&uds, 7000).expect("the guest accepts");
    let mut rtts = Vec::new();
    for i in 0..PINGS {
        let t = Instant::now();
        echo_byte(&mut c, i as u8);
        rtts.push(ms(t.elapsed()));
    }
    report.push(summary("1-byte round trip on an open stream", rtts));

    let data: Vec<u8> = (0..BULK).map(|i| (i * 31 % 251) as u8).collect();
    let mut writer = c.get_ref().try_clone().unwrap();
    let t = Instant::now();
    let sent = data.clone();
    let w = std::thread::spawn(move || {
        for chunk in sent.chunks(64 * 1024) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(BULK);
    c.read_to_end(&mut back).unwrap();
    let elapsed = t.elapsed();
    w.join().unwrap();
    assert!(
        back == data,
        "bulk echo: {} of {} bytes, equal: false",
        back.len(),
        BULK
    );
    report.push(format!(
        "bulk echo {} MiB each way: {:.2} s, {:.2} MiB/s each way",
        BULK >> 20,
        elapsed.as_secs_f64(),
        (BULK as f64 / (1 << 20) as f64) / elapsed.as_secs_f64()
    ));

    // Guest-initiated: the guest connects to port 5000, which is <uds>_5000.
    let (mut g, _) = guest_listener.accept().unwrap();
    g.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let hello = b"hello from the host, over vsock\n";
    g.write_all(hello).unwrap();
    g.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    g.read_to_end(&mut back).unwrap();
    assert_eq!(back, hello, "the guest-initiated stream echoes");
    report
}

#[test]
fn vsock_streams_both_ways_with_a_real_guest() {
    if sandbox_lab::testing::delegate("vsock_streams_both_ways_with_a_real_guest")
        .expect("the lab runs the test")
        .ran_in_lab()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = build_root(dir.path());
    let uds = dir.path().join("vsock.sock");
    let mut port_path = uds.clone().into_os_string();
    port_path.push("_5000");
    let guest_listener = UnixListener::bind(&port_path).unwrap();

    let kernel = sandbox_kernel::cached()
        .expect("the guest kernel is not built: run `sandbox kernel build`")
        .vmlinux;
    let mut config = VmConfig::new(
        kernel,
        DiskConfig {
            path: root,
            read_only: false,
        },
    );
    config.memory_mib = 256;
    let script = format!(
        "{g} vsock-echo --port 7000 --count {n} && {g} vsock-echo --connect-host 5000",
        g = GUEST_PATH_IN_IMAGE,
        n = TIMED_CONNECTIONS + 2
    );
    let mut plan = Plan::new(Mode::Vm, vec!["/bin/sh".into(), "-c".into(), script]);
    plan.ready = ReadyChannel::Port(exit_device::PORT);
    config.plan = Some(plan);
    config.vsock = Some(VsockConfig {
        uds_path: uds.clone(),
        guest_cid: 3,
    });
    let console = Capture::default();
    config.serial = SerialSink::Writer(Box::new(console.clone()));

    let host = {
        let uds = uds.clone();
        std::thread::spawn(move || host_side(uds, guest_listener))
    };
    let started = Instant::now();
    let outcome = with_watchdog(|| run(config).expect("the VM boots"));
    let text = String::from_utf8_lossy(&console.0.lock().unwrap()).to_string();
    assert_eq!(
        outcome.ending,
        Ending::GuestExit(0),
        "the guest's echoes succeeded; console:\n{text}"
    );
    let report = host.join().expect("the host side passed");
    assert!(!uds.exists(), "the vsock socket is removed when the VM ends");

    let line = |mode: &str| -> serde_json::Value {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .find(|v| v["workload"] == "vsock-echo" && v["mode"] == mode)
            .unwrap_or_else(|| panic!("no vsock-echo {mode} line on the console:\n{text}"))
    };
    assert_eq!(line("connect-host")["bytes"], 32);
    let listen = line("listen");
    assert_eq!(listen["connections"], TIMED_CONNECTIONS + 2);
    assert_eq!(listen["bytes"], (1 + TIMED_CONNECTIONS + PINGS + BULK) as u64);

    eprintln!(
        "vsock timings ({}; the VM ran {:.1} s):",
        if std::env::var_os("SANDBOX_CACHE").is_some_and(|c| c == sandbox_lab::init_script::L1_SANDBOX_CACHE)
        {
            "in the lab's L1: nested KVM under QEMU TCG, a noisy machine"
        } else {
            "hardware KVM"
        },
        started.elapsed().as_secs_f64()
    );
    for l in report {
        eprintln!("  {l}");
    }
}
