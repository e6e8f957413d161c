//! `testing::delegate` for real: on this host (PVM) the body runs inside L1 through this very
//! test binary; on a hardware-KVM host it runs here. Either way it checks a usable KVM.

use std::fs::File;
use std::os::fd::AsRawFd;

/// KVM_GET_API_VERSION: _IO(0xAE, 0x00).
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// KVM_CREATE_VM: _IO(0xAE, 0x01).
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;

#[test]
fn kvm_creates_a_vm_wherever_the_body_runs() {
    let place = sandbox_lab::testing::delegate("kvm_creates_a_vm_wherever_the_body_runs").unwrap();
    if place.ran_in_lab() {
        return;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    assert!(
        cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && (l.contains(" svm") || l.contains(" vmx"))),
        "the body runs only where the CPU has hardware virtualization"
    );
    let kvm = File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .expect("/dev/kvm opens");
    // SAFETY: ioctls without arguments on an open /dev/kvm descriptor.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    assert_eq!(version, 12, "KVM API version");
    // SAFETY: as above; the returned descriptor is closed below.
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) };
    assert!(vm >= 0, "KVM_CREATE_VM: {}", std::io::Error::last_os_error());
    // SAFETY: vm is a descriptor this test owns.
    unsafe { libc::close(vm) };
}
