//! Boots the probe guest (see `sandbox_vmm::probe`) through the whole VMM on this host's KVM.
//! On hardware KVM it must end with the status it reported and its console line; on a PVM host
//! (allowed explicitly) a stock 64-bit entry cannot run, and the VMM must say so as a triple
//! fault rather than hang or crash. Without /dev/kvm the test fails, naming what is missing.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sandbox_vmm::kvm_kind::{self, KvmKind};
use sandbox_vmm::{probe, run, DiskConfig, Ending, SerialSink, VmConfig};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(d);
        Ok(d.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn probe_guest_runs_to_its_end_through_the_vmm() {
    let kind = kvm_kind::detect();
    assert!(
        !matches!(kind, KvmKind::Absent | KvmKind::NoPermission),
        "this test needs /dev/kvm (found {kind:?}): load kvm_intel/kvm_amd or run it in `sandbox lab`"
    );
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("probe.elf");
    std::fs::write(
        &kernel,
        probe::elf_kernel(&probe::exit_code(b"probe says hi\r\n", 7)),
    )
    .unwrap();
    let root = dir.path().join("root.img");
    std::fs::write(&root, vec![0u8; 1 << 20]).unwrap();
    let mut config = VmConfig::new(
        kernel,
        DiskConfig {
            path: root,
            read_only: true,
        },
    );
    config.memory_mib = 64;
    config.vcpus = 2;
    config.allow_pvm = true;
    let console = Capture::default();
    config.serial = SerialSink::Writer(Box::new(console.clone()));
    let outcome = run(config).expect("the VMM builds and runs the probe VM");
    let text = String::from_utf8_lossy(&console.0.lock().unwrap()).to_string();
    eprintln!(
        "probe on {kind:?}: {:?}, boot {}, timings {:?}, VMM RSS {} KiB",
        outcome.ending,
        outcome.boot_protocol,
        outcome.timings,
        outcome.vmm_rss_bytes_excluding_guest >> 10
    );
    let t = outcome.timings;
    assert!(t.vm_built_us <= t.ended_us);
    assert!(outcome.vmm_rss_bytes_excluding_guest > 0);
    // PVM may refuse a non-PVM guest's first instruction: then a triple fault, reported as such.
    let pvm = kind == KvmKind::Pvm || Path::new("/sys/module/kvm_pvm").exists();
    if pvm && matches!(outcome.ending, Ending::TripleFault { .. }) {
        return;
    }
    assert_eq!(outcome.ending, Ending::GuestExit(7), "console: {text}");
    assert_eq!(text, "probe says hi\n");
    assert!(t.kernel_entry_us.unwrap() <= t.init_started_us.unwrap());
    assert!(t.init_started_us.unwrap() <= t.ready_us.unwrap());
    assert!(t.ready_us.unwrap() <= t.exit_reported_us.unwrap());
    assert_eq!(outcome.exit_status(), 7);
}

fn probe_config(dir: &Path, code: &[u8]) -> VmConfig {
    let kernel = dir.join("probe.elf");
    std::fs::write(&kernel, probe::elf_kernel(code)).unwrap();
    let root = dir.join("root.img");
    std::fs::write(&root, vec![0u8; 1 << 20]).unwrap();
    let mut config = VmConfig::new(
        kernel,
        DiskConfig {
            path: root,
            read_only: false,
        },
    );
    config.memory_mib = 64;
    config.allow_pvm = true;
    config.serial = SerialSink::Null;
    config
}

/// A guest that never ends is ended by a signal to the VMM, which reports it as the ending
/// (status 128+N) after knocking the vCPU out of the guest.
#[test]
fn a_signal_ends_a_spinning_guest() {
    let kind = kvm_kind::detect();
    assert!(
        !matches!(kind, KvmKind::Absent | KvmKind::NoPermission),
        "needs /dev/kvm, found {kind:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    // jmp $ : spins in the guest without ever exiting to the VMM.
    let config = probe_config(dir.path(), &[0xeb, 0xfe]);
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        // SAFETY: the target thread is blocked in `run`, which holds SIGTERM blocked and reads it
        // from a signalfd; the thread outlives this call.
        unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGTERM) };
    });
    let started = std::time::Instant::now();
    let outcome = run(config).expect("the VMM runs the spinning probe");
    killer.join().unwrap();
    eprintln!(
        "spinning probe ended after {:?}: {:?}",
        started.elapsed(),
        outcome.ending
    );
    let pvm = kind == KvmKind::Pvm;
    if pvm && matches!(outcome.ending, Ending::TripleFault { .. }) {
        return;
    }
    assert_eq!(outcome.ending, Ending::Signal(libc::SIGTERM));
    assert_eq!(outcome.exit_status(), 128 + libc::SIGTERM);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// A triple fault (here: a jump into unmapped memory past the 1 GiB identity map with no IDT)
/// ends the VM as a crash, with the crash status.
#[test]
fn a_triple_fault_is_a_crash_not_a_hang() {
    let kind = kvm_kind::detect();
    assert!(
        !matches!(kind, KvmKind::Absent | KvmKind::NoPermission),
        "needs /dev/kvm, found {kind:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    // mov rax, 0x80_0000_0000 ; jmp rax  (outside the identity map: page fault, no IDT: triple)
    let code = [0x48, 0xb8, 0, 0, 0, 0, 0x80, 0, 0, 0, 0xff, 0xe0];
    let outcome = run(probe_config(dir.path(), &code)).expect("the VMM runs the faulting probe");
    assert!(
        matches!(outcome.ending, Ending::TripleFault { .. }),
        "{:?}",
        outcome.ending
    );
    assert_eq!(outcome.exit_status(), sandbox_vmm::CRASH_EXIT_STATUS);
}
