//! vCPUs: per-vCPU set-up (CPUID with its APIC ID and topology, MSRs, FPU, LAPIC, and the boot
//! registers on the boot vCPU) and the run loop each vCPU thread executes. The loop only routes
//! port and MMIO accesses to the buses and turns terminal exits into a stop reason; device work
//! happens on the device thread. Kicked out of KVM_RUN during a halt check, a vCPU thread
//! answers whether its vCPU can run again ([`crate::halt_check`]).

use std::sync::{Arc, Mutex};

use kvm_bindings::{
    CpuId, Msrs, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::boot::loader::BootEntry;
use crate::boot::{cpuid, regs};
use crate::bus::Bus;
use crate::error::VmmError;
use crate::halt_check::HaltCheck;
use crate::state::{Clock, Stop, StopReason};

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;
/// RFLAGS.IF: maskable interrupts enabled.
const RFLAGS_IF: u64 = 1 << 9;

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
    /// Asked, after a kick, whether this vCPU can run again.
    pub halt_check: Arc<HaltCheck>,
}

/// Whether `vcpu` (out of KVM_RUN) can never run again by itself: halted with interrupts off
/// (the end of a kernel's halt or power-off without ACPI), or never started by the boot vCPU.
/// Only an NMI, INIT or SIPI could wake it: no device here sends one, so once every vCPU is in
/// this state nothing is left to. A failed query says no.
fn cannot_run_again(vcpu: &VcpuFd) -> bool {
    let Ok(mp) = vcpu.get_mp_state() else {
        return false;
    };
    match mp.mp_state {
        KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED => true,
        KVM_MP_STATE_HALTED => vcpu.get_regs().is_ok_and(|r| r.rflags & RFLAGS_IF == 0),
        _ => false,
    }
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
                    self.answer_halt_check();
                    continue;
                }
                Err(e) => StopReason::VcpuFailure(format!("KVM_RUN on vCPU {}: {e}", self.index)),
            };
            self.stop.request(reason);
            return;
        }
    }

    /// Answers a running halt check's round, if any; the last answer that proves every vCPU
    /// stuck ends the VM as a power-off.
    fn answer_halt_check(&self) {
        let index = self.index as usize;
        if self.halt_check.wants_answer(index) && self.halt_check.answer(index, cannot_run_again(&self.vcpu))
        {
            self.stop.request(StopReason::PowerOff);
        }
    }
}
