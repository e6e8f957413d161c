//! VM mode behind containerd: runs `scripts/oci-vm-lab`, which boots the lab's L1 (this host's
//! KVM is PVM, or missing) and there drives `sandbox-runtime-vm` through containerd's runc shim:
//! output and exit status, a terminal, a signal, and the workload's own kernel. The script exits
//! 0 only when every check passed; its last line is the kernel release the workload saw, which
//! must be the guest kernel sandbox built, not this host's.
//!
//! Needs the guest kernel built, containerd (scripts/setup), util-linux's `script` and binutils.

use std::path::Path;
use std::process::Command;

#[test]
fn a_vm_mode_container_runs_through_containerd() {
    let bin = Path::new(env!("CARGO_BIN_EXE_sandbox")).parent().unwrap();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/oci-vm-lab"))
        .env("SANDBOX_BIN_DIR", bin)
        .env(sandbox_lab::RETRY_STALLED_ENV, "1")
        .output()
        .expect("scripts/oci-vm-lab runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(out.status.success(), "scripts/oci-vm-lab failed: {}", out.status);
    let last = stdout.lines().last().unwrap_or_default().trim();
    let kernel = sandbox_kernel::cached().expect("the guest kernel is built (sandbox kernel build)");
    // The built kernel's release, from its .config's header ("# Linux/x86 6.1.192 Kernel ...").
    let config = std::fs::read_to_string(&kernel.config).unwrap();
    let release = config
        .lines()
        .find_map(|l| l.strip_prefix("# Linux/x86 ")?.split(' ').next())
        .expect("a release in the guest kernel's .config header");
    let host = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    assert_ne!(last, host, "the workload reported the host's kernel");
    assert!(
        last.starts_with(release),
        "the workload reported {last:?}, the built guest kernel is {release}"
    );
    for check in [
        "output and exit status",
        "-t gives",
        "pause and resume",
        "SIGTERM reached",
        "capabilities and seccomp",
        "masked and read-only paths",
        "a bind-mounted host file is copied in",
        "a directory bind mount is refused",
        "joins the workload's namespaces",
        "its own kernel",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with("ok: ") && l.contains(check)),
            "no \"ok: ...{check}...\" line:\n{stdout}"
        );
    }
}
