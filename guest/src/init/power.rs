//! The VM's way out and its signals to the VMM: 32-bit writes to the boot/exit device's I/O
//! port, `sync`, and the reboot that ends the VM (`reboot=k`: the VMM ends on the i8042 reset).

use sandbox_protocol::exit_device::{Event, PORT};
use std::io;

/// Why a write to the boot/exit device did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("ioperm({port:#x}) failed: {source} (only possible as root in a VM, not in a container)")]
    Permission { port: u16, source: io::Error },
    #[error("port I/O exists only on x86_64: this guest cannot reach the boot/exit device")]
    Unsupported,
}

/// Writes `value` to the 32-bit I/O port `port`.
#[cfg(target_arch = "x86_64")]
pub fn write_port(port: u16, value: u32) -> Result<(), PortError> {
    // SAFETY: ioperm only changes this process's I/O permission bitmap; no memory is touched.
    let rc = unsafe { libc::ioperm(libc::c_ulong::from(port), 4, 1) };
    if rc != 0 {
        return Err(PortError::Permission {
            port,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: ioperm above granted this process access to `port`..`port+4`, so `out` cannot
    // fault; the boot/exit device has no effect on this process's memory.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags));
    }
    Ok(())
}

/// Writes `value` to the 32-bit I/O port `port` (not possible on this architecture).
#[cfg(not(target_arch = "x86_64"))]
pub fn write_port(_port: u16, _value: u32) -> Result<(), PortError> {
    Err(PortError::Unsupported)
}

/// Reports `event` to the VMM through the boot/exit device.
pub fn report(event: Event) -> Result<(), PortError> {
    write_port(PORT, event.encode())
}

/// Flushes every filesystem's dirty data to its device.
pub fn sync_all() {
    nix::unistd::sync();
}

/// Restarts the machine at once; with `reboot=k` the VMM sees the keyboard-controller reset and
/// ends. Returns only if the kernel refused.
pub fn reboot_now() -> io::Error {
    // SAFETY: reboot(2) with RB_AUTOBOOT takes no pointers; on success it does not return.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    io::Error::last_os_error()
}
