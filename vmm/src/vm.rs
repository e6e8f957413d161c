//! The KVM VM: capability checks, TSS and identity-map addresses, the in-kernel irqchip and PIT,
//! guest memory slots, and the ioeventfd/irqfd wiring of devices.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::error::VmmError;
use crate::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};

/// KVM features the VMM cannot do without.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "an in-kernel irqchip (KVM_CAP_IRQCHIP)"),
    (Cap::Ioeventfd, "ioeventfd (KVM_CAP_IOEVENTFD)"),
    (Cap::Irqfd, "irqfd (KVM_CAP_IRQFD)"),
    (Cap::UserMemory, "user memory regions (KVM_CAP_USER_MEMORY)"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::Pit2, "the in-kernel PIT (KVM_CAP_PIT2)"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
];

/// Checks that KVM offers everything the VMM uses.
pub fn check_capabilities(kvm: &Kvm) -> Result<(), VmmError> {
    for (cap, what) in REQUIRED_CAPS {
        if !kvm.check_extension(*cap) {
            return Err(VmmError::KvmCapability(what));
        }
    }
    Ok(())
}

/// Creates the VM with its interrupt controllers and memory.
pub fn create(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, VmmError> {
    let vm = kvm.create_vm().map_err(VmmError::kvm("KVM_CREATE_VM"))?;
    vm.set_tss_address(KVM_TSS_ADDRESS as usize)
        .map_err(VmmError::kvm("KVM_SET_TSS_ADDR"))?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
        .map_err(VmmError::kvm("KVM_SET_IDENTITY_MAP_ADDR"))?;
    vm.create_irq_chip()
        .map_err(VmmError::kvm("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(VmmError::kvm("KVM_CREATE_PIT2"))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| VmmError::Memory {
                mib: region.len() >> 20,
                detail: e.to_string(),
            })?;
        let slot_def = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of `memory_size` bytes owned by `mem`, which the
        // caller keeps alive (it outlives the VM fd and every vCPU thread).
        unsafe { vm.set_user_memory_region(slot_def) }
            .map_err(VmmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(vm)
}

/// Makes a 32-bit write of `datamatch` at `addr` (MMIO) signal `evt` inside KVM.
pub fn register_mmio_notify(vm: &VmFd, evt: &EventFd, addr: u64, datamatch: u32) -> Result<(), VmmError> {
    vm.register_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
        .map_err(VmmError::kvm("KVM_IOEVENTFD"))
}

/// Makes a write to `evt` raise IRQ line `irq`.
pub fn register_irq(vm: &VmFd, evt: &EventFd, irq: u32) -> Result<(), VmmError> {
    vm.register_irqfd(evt, irq).map_err(VmmError::kvm("KVM_IRQFD"))
}
