//! The guest physical address map: where boot structures, the kernel, RAM and the MMIO devices
//! go, and the RAM regions (split around the 32-bit MMIO hole) that back guest memory.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::error::VmmError;

/// Boot GDT (four 8-byte descriptors).
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (one empty descriptor).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux zero page (`boot_params`); for PVH the memory map goes here instead.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// PVH memory map table (PVH and the zero page are never both used).
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables for the 64-bit entry: PML4, PDPT, PD.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line, and its maximum length (x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_LEN: usize = 2048;
/// Start of the extended BIOS data area; the MP table lives here, RAM in the e820 map ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// The first byte past low memory (640 KiB).
pub const LOW_MEMORY_END: u64 = 0xa0000;
/// Where the kernel goes (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole: RAM stops here and resumes at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xd000_0000;
/// End of the 32-bit address space.
pub const FOUR_GIB: u64 = 0x1_0000_0000;
/// The virtio-mmio window: one 4 KiB slot per device from the start of the hole.
pub const VIRTIO_MMIO_START: u64 = MMIO_HOLE_START;
pub const VIRTIO_MMIO_SLOT: u64 = 0x1000;
/// The first IRQ line given to virtio devices (0-4 are the PIT, keyboard, cascade, COM2, COM1).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// The last IOAPIC pin.
pub const MAX_IRQ: u32 = 23;
/// At most this many virtio devices (one IRQ each).
pub const MAX_VIRTIO_DEVICES: usize = (MAX_IRQ - VIRTIO_IRQ_BASE + 1) as usize;
/// KVM's TSS (three pages) and identity-map page, at the top of the hole.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// The IOAPIC and local APIC addresses (fixed by the PC architecture).
pub const IOAPIC_ADDRESS: u32 = 0xfec0_0000;
pub const APIC_ADDRESS: u32 = 0xfee0_0000;

/// The COM1 serial port and its IRQ.
pub const SERIAL_PORT: u16 = 0x3f8;
pub const SERIAL_PORT_LEN: u16 = 8;
pub const SERIAL_IRQ: u32 = 4;
/// The i8042 keyboard controller's data and command ports.
pub const I8042_PORT: u16 = 0x60;
pub const I8042_PORT_LEN: u16 = 5;

/// The guest RAM regions for `size` bytes: everything below the MMIO hole, the rest from 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_HOLE_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_HOLE_START as usize),
            (GuestAddress(FOUR_GIB), (size - MMIO_HOLE_START) as usize),
        ]
    }
}

/// The MMIO base address of the virtio device in slot `index`.
pub fn virtio_mmio_base(index: usize) -> u64 {
    VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SLOT
}

/// The IRQ line of the virtio device in slot `index`.
pub fn virtio_irq(index: usize) -> u32 {
    VIRTIO_IRQ_BASE + index as u32
}

/// What an e820 / PVH memory-map entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    Ram,
    Reserved,
}

impl MemoryKind {
    /// The e820 type code (1 = usable RAM, 2 = reserved), the same in the PVH map.
    pub fn e820_type(self) -> u32 {
        match self {
            MemoryKind::Ram => 1,
            MemoryKind::Reserved => 2,
        }
    }
}

/// One memory-map entry: `(start, size, kind)`.
pub type MemoryMapEntry = (u64, u64, MemoryKind);

/// The memory map the guest kernel sees for `size` bytes of RAM: low memory up to the EBDA (the
/// MP table sits above it), then RAM from 1 MiB, split around the MMIO hole.
pub fn memory_map(size: u64) -> Vec<MemoryMapEntry> {
    let mut map = vec![
        (0, EBDA_START, MemoryKind::Ram),
        (EBDA_START, LOW_MEMORY_END - EBDA_START, MemoryKind::Reserved),
    ];
    let low_end = size.min(MMIO_HOLE_START);
    if low_end > HIMEM_START {
        map.push((HIMEM_START, low_end - HIMEM_START, MemoryKind::Ram));
    }
    if size > MMIO_HOLE_START {
        map.push((FOUR_GIB, size - MMIO_HOLE_START, MemoryKind::Ram));
    }
    map
}

/// Allocates guest memory of `mib` MiB (anonymous, not touched until the guest uses it).
pub fn guest_memory(mib: u64) -> Result<GuestMemoryMmap, VmmError> {
    GuestMemoryMmap::from_ranges(&ram_regions(mib << 20)).map_err(|e| VmmError::Memory {
        mib,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn small_memory_is_one_region_and_large_memory_skips_the_hole() {
        assert_eq!(ram_regions(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        let regions = ram_regions(4 << 30);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0], (GuestAddress(0), MMIO_HOLE_START as usize));
        assert_eq!(regions[1].0, GuestAddress(FOUR_GIB));
        let total: usize = regions.iter().map(|r| r.1).sum();
        assert_eq!(total as u64, 4 << 30);
    }

    #[test]
    fn memory_map_keeps_the_ebda_and_hole_out_of_ram() {
        let map = memory_map(5 << 30);
        let ram: u64 = map.iter().filter(|e| e.2 == MemoryKind::Ram).map(|e| e.1).sum();
        // All RAM except the 384 KiB between the EBDA and 1 MiB is usable.
        assert_eq!(ram, (5 << 30) - (HIMEM_START - EBDA_START));
        for (start, size, kind) in map {
            if kind == MemoryKind::Ram {
                let end = start + size;
                assert!(
                    end <= MMIO_HOLE_START || start >= FOUR_GIB,
                    "{start:#x}..{end:#x}"
                );
                assert!(end <= EBDA_START || start >= HIMEM_START);
            }
        }
    }

    #[test]
    fn guest_memory_allocates_the_requested_size() {
        let mem = guest_memory(64).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
    }

    #[test]
    fn devices_get_distinct_slots_and_irqs_inside_the_hole() {
        assert_eq!(virtio_mmio_base(0), MMIO_HOLE_START);
        assert_eq!(virtio_irq(0), 5);
        assert_eq!(virtio_irq(MAX_VIRTIO_DEVICES - 1), MAX_IRQ);
        assert!(virtio_mmio_base(MAX_VIRTIO_DEVICES) < KVM_IDENTITY_MAP_ADDRESS);
    }
}
