//! `sandbox-guest hold-kvm`: the lab's L1 keeps one idle KVM VM open for its whole life.
//!
//! Why: creating and destroying a VM flips static keys in the host kernel (KVM's preempt
//! notifiers, the LAPIC's "software-disabled" key), and each flip rewrites kernel text with
//! int3-based patching, `__schedule` included. Under QEMU's multi-threaded TCG (the lab's L1),
//! a vCPU sometimes kept executing a stale translation of such an int3 while memory no longer
//! held it, and L1 froze with both vCPUs looping in `exc_int3`. With this VM open, the counts
//! behind those keys never drop to zero, so L1's VMs are created and destroyed without any
//! text patching.
//!
//! The VM has an in-kernel irqchip and one vCPU that never runs: its LAPIC stays in its reset
//! state (software-disabled), which holds the LAPIC key; the VM itself holds the preempt
//! notifier key. It has no memory and costs L1 a few pages.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `_IO(KVMIO, n)` numbers from `<linux/kvm.h>` (KVMIO = 0xAE).
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_CREATE_IRQCHIP: libc::c_ulong = 0xAE60;

/// Opens `/dev/kvm` and creates the idle VM; returns the VM and vCPU descriptors, which keep it
/// alive while open.
pub fn create() -> Result<(OwnedFd, OwnedFd), String> {
    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = new_fd(kvm.as_raw_fd(), KVM_CREATE_VM, "KVM_CREATE_VM")?;
    kvm_ioctl(vm.as_raw_fd(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP")?;
    let vcpu = new_fd(vm.as_raw_fd(), KVM_CREATE_VCPU, "KVM_CREATE_VCPU")?;
    Ok((vm, vcpu))
}

/// A KVM ioctl whose argument is the integer 0 (machine type 0, vCPU id 0, or unused).
fn kvm_ioctl(fd: libc::c_int, request: libc::c_ulong, name: &str) -> Result<libc::c_int, String> {
    // SAFETY: these three KVM ioctls take an integer argument, not a pointer, so no memory is
    // shared with the kernel; `fd` is open for the duration of the call.
    let ret = unsafe { libc::ioctl(fd, request, 0 as libc::c_ulong) };
    if ret < 0 {
        Err(format!("{name} failed: {}", std::io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

/// A KVM ioctl that returns a new descriptor.
fn new_fd(fd: libc::c_int, request: libc::c_ulong, name: &str) -> Result<OwnedFd, String> {
    let new = kvm_ioctl(fd, request, name)?;
    // SAFETY: KVM_CREATE_VM and KVM_CREATE_VCPU return a descriptor the kernel just opened for
    // us and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The command: creates the VM, says so on stdout, and sleeps until killed. Exit status 1 (with
/// the reason on stderr) when KVM refuses.
pub fn main() -> i32 {
    match create() {
        Ok(_held) => {
            println!("hold-kvm: holding an idle VM (pid {})", std::process::id());
            loop {
                // SAFETY: pause(2) only blocks until a signal arrives.
                unsafe { libc::pause() };
            }
        }
        Err(e) => {
            eprintln!("sandbox-guest hold-kvm: {e}");
            1
        }
    }
}
