//! vCPUs: per-vCPU set-up (CPUID with its APIC ID and topology, MSRs, FPU, LAPIC, and the boot
//! registers on the boot vCPU) and the run loop each vCPU thread executes. The loop only routes
//! port and MMIO accesses to the buses and turns terminal exits into a stop reason; device work
//! happens on the device thread.

use std::sync::{Arc, Mutex};

use kvm_bindings::{CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::boot::loader::BootEntry;
use crate::boot::{cpuid, regs};
use crate::bus::Bus;
use crate::error::VmmError;
use crate::state::{Clock, Stop, StopReason};

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// The signal that knocks a vCPU thread out of KVM_RUN when the VM stops.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler so the signal interrupts KVM_RUN instead of killing us.
pub fn install_kick_handler() -> Result<(), VmmError> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
        .map_err(|e| VmmError::Thread(format!("installing the vCPU kick signal handler: {e}")))
}

/// Sets up vCPU `index` of `count` for `entry`.
pub fn configure(
    vcpu: &VcpuFd,
    supported: &CpuId,
    index: u32,
    count: u32,
    extras: cpuid::KvmExtras,
    entry: &BootEntry,
) -> Result<(), VmmError> {
    let mut cpuid = supported.clone();
    cpuid::patch(cpuid.as_mut_slice(), index, count, extras);
    vcpu.set_cpuid2(&cpuid).map_err(VmmError::kvm("KVM_SET_CPUID2"))?;
    let entries = regs::boot_msrs();
    let msrs = Msrs::from_entries(&entries).map_err(|e| VmmError::Setup(format!("MSR list: {e:?}")))?;
    vcpu.set_msrs(&msrs).map_err(VmmError::kvm("KVM_SET_MSRS"))?;
    vcpu.set_fpu(&regs::fpu()).map_err(VmmError::kvm("KVM_SET_FPU"))?;
    let lapic = vcpu.get_lapic().map_err(VmmError::kvm("KVM_GET_LAPIC"))?;
    vcpu.set_lapic(&regs::lapic(lapic))
        .map_err(VmmError::kvm("KVM_SET_LAPIC"))?;
    if index == 0 {
        let sregs = vcpu.get_sregs().map_err(VmmError::kvm("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&regs::sregs(sregs, entry))
            .map_err(VmmError::kvm("KVM_SET_SREGS"))?;
        vcpu.set_regs(&regs::regs(entry))
            .map_err(VmmError::kvm("KVM_SET_REGS"))?;
    }
    Ok(())
}

/// What a vCPU thread needs.
pub struct VcpuRunner {
    pub vcpu: VcpuFd,
    pub index: u32,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub stop: Arc<Stop>,
    pub clock: Clock,
    /// Set by the boot vCPU when it first enters the guest (µs since VMM start).
    pub kernel_entry_us: Arc<Mutex<Option<u64>>>,
}

impl VcpuRunner {
    /// Runs the vCPU until the VM stops.
    pub fn run(mut self) {
        let pio = self.pio.clone();
        let mmio = self.mmio.clone();
        loop {
            if self.stop.is_requested() {
                return;
            }
            if self.index == 0 {
                let mut t = self.kernel_entry_us.lock().unwrap_or_else(|p| p.into_inner());
                if t.is_none() {
                    *t = Some(self.clock.now_us());
                }
            }
            let reason = match self.vcpu.run() {
                Ok(VcpuExit::IoIn(port, data)) => {
                    pio.read(u64::from(port), data);
                    continue;
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    pio.write(u64::from(port), data);
                    continue;
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    mmio.read(addr, data);
                    continue;
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    mmio.write(addr, data);
                    continue;
                }
                Ok(VcpuExit::Intr) => continue,
                Ok(VcpuExit::Shutdown) => StopReason::TripleFault,
                Ok(VcpuExit::Hlt) => StopReason::Halted,
                Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => StopReason::Reset,
                    KVM_SYSTEM_EVENT_CRASH => StopReason::VcpuFailure("the guest reported a crash".into()),
                    other => StopReason::VcpuFailure(format!("unknown system event {other}")),
                },
                Ok(VcpuExit::FailEntry(reason, cpu)) => StopReason::VcpuFailure(format!(
                    "KVM could not enter vCPU {cpu} (hardware entry failure reason {reason:#x})"
                )),
                Ok(VcpuExit::InternalError) => {
                    StopReason::VcpuFailure(format!("KVM internal error on vCPU {}", self.index))
                }
                Ok(other) => {
                    StopReason::VcpuFailure(format!("unexpected exit on vCPU {}: {other:?}", self.index))
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.vcpu.set_kvm_immediate_exit(0);
                    continue;
                }
                Err(e) => StopReason::VcpuFailure(format!("KVM_RUN on vCPU {}: {e}", self.index)),
            };
            self.stop.request(reason);
            return;
        }
    }
}
