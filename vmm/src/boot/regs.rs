//! The boot vCPU's starting state for each entry protocol: GDT and segments, control registers
//! and identity-mapped page tables (64-bit entry), general registers, and the MSR, FPU and local
//! APIC values every vCPU starts with. Pure values here; `vcpu.rs` hands them to KVM.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::loader::BootEntry;
use crate::error::VmmError;
use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START, PVH_INFO_START,
    ZERO_PAGE_START,
};

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// GDT for the Linux 64-bit entry: null, 64-bit code, data, TSS.
const GDT_LONG: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
];
/// GDT for the PVH entry: null, 32-bit code, data, TSS.
const GDT_PVH: [u64; 4] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008b_0000_0000_ffff,
];

/// Decodes GDT entry `index` into the segment KVM wants.
pub fn segment(table: &[u64], index: usize) -> kvm_segment {
    let entry = table[index];
    let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
    let raw_limit = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: (index * 8) as u16,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if present == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// Writes the GDT, an empty IDT and (for the 64-bit entry) page tables identity-mapping the
/// first GiB with 2 MiB pages.
pub fn write_boot_tables(mem: &GuestMemoryMmap, entry: &BootEntry) -> Result<(), VmmError> {
    let err = |e: vm_memory::GuestMemoryError| VmmError::Memory {
        mib: 0,
        detail: format!("writing boot page tables: {e}"),
    };
    let gdt = match entry {
        BootEntry::Linux64 { .. } => &GDT_LONG,
        BootEntry::Pvh { .. } => &GDT_PVH,
    };
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(err)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START)).map_err(err)?;
    if let BootEntry::Linux64 { .. } = entry {
        mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))
            .map_err(err)?;
        mem.write_obj(PDE_START | 0x03, GuestAddress(PDPTE_START))
            .map_err(err)?;
        for i in 0..512u64 {
            mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_START + i * 8))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Special registers for `entry`, on top of what KVM reported (`base`).
pub fn sregs(base: kvm_sregs, entry: &BootEntry) -> kvm_sregs {
    let mut s = base;
    let gdt: &[u64] = match entry {
        BootEntry::Linux64 { .. } => &GDT_LONG,
        BootEntry::Pvh { .. } => &GDT_PVH,
    };
    let code = segment(gdt, 1);
    let data = segment(gdt, 2);
    let tss = segment(gdt, 3);
    s.gdt.base = BOOT_GDT_START;
    s.gdt.limit = (std::mem::size_of_val(gdt) - 1) as u16;
    s.idt.base = BOOT_IDT_START;
    s.idt.limit = 7;
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = tss;
    match entry {
        BootEntry::Linux64 { .. } => {
            s.cr0 |= CR0_PE | CR0_PG;
            s.cr3 = PML4_START;
            s.cr4 |= CR4_PAE;
            s.efer |= EFER_LME | EFER_LMA;
        }
        BootEntry::Pvh { .. } => {
            s.cr0 = CR0_PE | CR0_ET;
            s.cr4 = 0;
        }
    }
    s
}

/// General registers for `entry`.
pub fn regs(entry: &BootEntry) -> kvm_regs {
    let mut r = kvm_regs {
        rflags: 0x2,
        rip: entry.address().0,
        ..Default::default()
    };
    match entry {
        BootEntry::Linux64 { .. } => {
            r.rsp = BOOT_STACK_POINTER;
            r.rbp = BOOT_STACK_POINTER;
            r.rsi = ZERO_PAGE_START;
        }
        BootEntry::Pvh { .. } => {
            r.rbx = PVH_INFO_START;
        }
    }
    r
}

/// MSRs every vCPU starts with: SYSCALL/SYSENTER cleared, TSC at zero, fast strings on, and
/// write-back as the default memory type.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    const IA32_SYSENTER_CS: u32 = 0x174;
    const IA32_SYSENTER_ESP: u32 = 0x175;
    const IA32_SYSENTER_EIP: u32 = 0x176;
    const STAR: u32 = 0xc000_0081;
    const LSTAR: u32 = 0xc000_0082;
    const CSTAR: u32 = 0xc000_0083;
    const SYSCALL_MASK: u32 = 0xc000_0084;
    const KERNEL_GS_BASE: u32 = 0xc000_0102;
    const IA32_TSC: u32 = 0x10;
    const IA32_MISC_ENABLE: u32 = 0x1a0;
    const MISC_ENABLE_FAST_STRING: u64 = 1;
    const MTRR_DEF_TYPE: u32 = 0x2ff;
    const MTRR_ENABLE: u64 = 1 << 11;
    const MTRR_MEM_TYPE_WB: u64 = 6;
    let msr = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        msr(IA32_SYSENTER_CS, 0),
        msr(IA32_SYSENTER_ESP, 0),
        msr(IA32_SYSENTER_EIP, 0),
        msr(STAR, 0),
        msr(CSTAR, 0),
        msr(KERNEL_GS_BASE, 0),
        msr(SYSCALL_MASK, 0),
        msr(LSTAR, 0),
        msr(IA32_TSC, 0),
        msr(IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        msr(MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

/// The x87/SSE state a CPU has after reset.
pub fn fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Local APIC with LINT0 as ExtINT (the PIC) and LINT1 as NMI, as a PC firmware leaves it.
pub fn lapic(mut state: kvm_lapic_state) -> kvm_lapic_state {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_NMI: u32 = 0x4;
    const APIC_MODE_EXTINT: u32 = 0x7;
    let set_mode = |regs: &mut [std::os::raw::c_char], at: usize, mode: u32| {
        let mut b = [0u8; 4];
        for (i, v) in b.iter_mut().enumerate() {
            *v = regs[at + i] as u8;
        }
        let value = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (i, v) in value.to_le_bytes().iter().enumerate() {
            regs[at + i] = *v as std::os::raw::c_char;
        }
    };
    set_mode(&mut state.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_mode(&mut state.regs, APIC_LVT1, APIC_MODE_NMI);
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;

    #[test]
    fn long_mode_code_segment_decodes_as_64_bit() {
        let cs = segment(&GDT_LONG, 1);
        assert_eq!((cs.l, cs.db, cs.present, cs.s, cs.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(cs.selector, 8);
        assert_eq!(cs.limit, 0xffff_ffff);
        let pvh_cs = segment(&GDT_PVH, 1);
        assert_eq!((pvh_cs.l, pvh_cs.db), (0, 1));
        let null = segment(&GDT_LONG, 0);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn entries_set_paging_or_not_and_point_registers_at_boot_info() {
        let linux = BootEntry::Linux64 {
            entry: GuestAddress(0x100_0200),
            setup_header: None,
        };
        let s = sregs(kvm_sregs::default(), &linux);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_START);
        let r = regs(&linux);
        assert_eq!((r.rip, r.rsi, r.rflags), (0x100_0200, ZERO_PAGE_START, 2));

        let pvh = BootEntry::Pvh {
            entry: GuestAddress(0x100_0000),
        };
        let s = sregs(kvm_sregs::default(), &pvh);
        assert_eq!(s.cr0 & CR0_PG, 0);
        assert_eq!(s.efer & EFER_LMA, 0);
        assert_eq!(regs(&pvh).rbx, PVH_INFO_START);
    }

    #[test]
    fn page_tables_identity_map_the_first_gib() {
        let mem = layout::guest_memory(32).unwrap();
        let entry = BootEntry::Linux64 {
            entry: GuestAddress(0x100_0000),
            setup_header: None,
        };
        write_boot_tables(&mem, &entry).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let last: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(last, (511 << 21) | 0x83);
    }

    #[test]
    fn lapic_lint_modes_are_extint_and_nmi() {
        let state = lapic(kvm_lapic_state::default());
        let read = |at: usize| {
            u32::from_le_bytes([
                state.regs[at] as u8,
                state.regs[at + 1] as u8,
                state.regs[at + 2] as u8,
                state.regs[at + 3] as u8,
            ])
        };
        assert_eq!((read(0x350) >> 8) & 7, 7);
        assert_eq!((read(0x360) >> 8) & 7, 4);
    }
}
