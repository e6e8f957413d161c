//! The Intel MultiProcessor table: how a kernel without ACPI learns the vCPUs (one local APIC
//! each), the IOAPIC and the ISA interrupt routing. Written at the EBDA, where Linux scans.

use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::VmmError;
use crate::layout::{APIC_ADDRESS, EBDA_START, IOAPIC_ADDRESS, MAX_IRQ};

/// The largest vCPU count the table can describe: APIC IDs are 8 bits and the IOAPIC takes the
/// ID after the last vCPU.
pub const MAX_SUPPORTED_CPUS: u32 = 254;

const SPEC_REVISION: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct FloatingPointer {
    signature: [u8; 4],
    physptr: u32,
    length: u8,
    specification: u8,
    checksum: u8,
    feature: [u8; 5],
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct TableHeader {
    signature: [u8; 4],
    length: u16,
    spec: u8,
    checksum: u8,
    oem: [u8; 8],
    product: [u8; 12],
    oemptr: u32,
    oemsize: u16,
    oemcount: u16,
    lapic: u32,
    reserved: u32,
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct Processor {
    kind: u8,
    apicid: u8,
    apicver: u8,
    cpuflag: u8,
    cpufeature: u32,
    featureflag: u32,
    reserved: [u32; 2],
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct Bus {
    kind: u8,
    busid: u8,
    bustype: [u8; 6],
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct IoApic {
    kind: u8,
    apicid: u8,
    apicver: u8,
    flags: u8,
    apicaddr: u32,
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct IntSource {
    kind: u8,
    irqtype: u8,
    irqflag: u16,
    srcbus: u8,
    srcbusirq: u8,
    dstapic: u8,
    dstirq: u8,
}

// SAFETY: each is a packed struct of plain integers: every byte pattern is a valid value and there
// is no padding.
unsafe impl ByteValued for FloatingPointer {}
// SAFETY: as above.
unsafe impl ByteValued for TableHeader {}
// SAFETY: as above.
unsafe impl ByteValued for Processor {}
// SAFETY: as above.
unsafe impl ByteValued for Bus {}
// SAFETY: as above.
unsafe impl ByteValued for IoApic {}
// SAFETY: as above.
unsafe impl ByteValued for IntSource {}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// The table for `cpus` vCPUs as bytes, to be placed at `base`: floating pointer, then the
/// configuration table it points to.
pub fn build(cpus: u32, base: u64) -> Result<Vec<u8>, VmmError> {
    if cpus == 0 || cpus > MAX_SUPPORTED_CPUS {
        return Err(VmmError::BadVcpuCount {
            requested: cpus,
            max: MAX_SUPPORTED_CPUS,
        });
    }
    let ioapic_id = cpus as u8 + 1;
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    for cpu in 0..cpus {
        let p = Processor {
            kind: ENTRY_PROCESSOR,
            apicid: cpu as u8,
            apicver: APIC_VERSION,
            cpuflag: CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 },
            cpufeature: CPU_STEPPING,
            featureflag: CPU_FEATURE_APIC | CPU_FEATURE_FPU,
            reserved: [0; 2],
        };
        entries.extend_from_slice(p.as_slice());
        count += 1;
    }
    let bus = Bus {
        kind: ENTRY_BUS,
        busid: 0,
        bustype: *b"ISA   ",
    };
    entries.extend_from_slice(bus.as_slice());
    count += 1;
    let ioapic = IoApic {
        kind: ENTRY_IOAPIC,
        apicid: ioapic_id,
        apicver: IOAPIC_VERSION,
        flags: 1,
        apicaddr: IOAPIC_ADDRESS,
    };
    entries.extend_from_slice(ioapic.as_slice());
    count += 1;
    for irq in 0..=MAX_IRQ as u8 {
        let src = IntSource {
            kind: ENTRY_INTSRC,
            irqtype: INT_TYPE_INT,
            irqflag: 0,
            srcbus: 0,
            srcbusirq: irq,
            dstapic: ioapic_id,
            dstirq: irq,
        };
        entries.extend_from_slice(src.as_slice());
        count += 1;
    }
    for (irqtype, dstapic, lint) in [(INT_TYPE_EXTINT, 0u8, 0u8), (INT_TYPE_NMI, 0xff, 1)] {
        let src = IntSource {
            kind: ENTRY_LINTSRC,
            irqtype,
            irqflag: 0,
            srcbus: 0,
            srcbusirq: 0,
            dstapic,
            dstirq: lint,
        };
        entries.extend_from_slice(src.as_slice());
        count += 1;
    }

    let fp_len = std::mem::size_of::<FloatingPointer>();
    let table_addr = base + fp_len as u64;
    let mut header = TableHeader {
        signature: *b"PCMP",
        length: (std::mem::size_of::<TableHeader>() + entries.len()) as u16,
        spec: SPEC_REVISION,
        checksum: 0,
        oem: *b"SANDBOX ",
        product: *b"MICROVM     ",
        oemcount: count,
        lapic: APIC_ADDRESS,
        ..Default::default()
    };
    let mut table = header.as_slice().to_vec();
    table.extend_from_slice(&entries);
    header.checksum = checksum(&table);
    table[..std::mem::size_of::<TableHeader>()].copy_from_slice(header.as_slice());

    let mut fp = FloatingPointer {
        signature: *b"_MP_",
        physptr: table_addr as u32,
        length: 1,
        specification: SPEC_REVISION,
        ..Default::default()
    };
    fp.checksum = checksum(fp.as_slice());
    let mut out = fp.as_slice().to_vec();
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the table for `cpus` vCPUs at the EBDA.
pub fn write(mem: &GuestMemoryMmap, cpus: u32) -> Result<(), VmmError> {
    let bytes = build(cpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|e| VmmError::Memory {
            mib: 0,
            detail: format!("writing the MP table: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn checksums_hold_and_the_pointer_points_at_the_table() {
        for cpus in [1, 2, 8, MAX_SUPPORTED_CPUS] {
            let bytes = build(cpus, EBDA_START).unwrap();
            assert_eq!(&bytes[..4], b"_MP_");
            assert_eq!(sum(&bytes[..16]), 0, "floating pointer checksum");
            let physptr = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
            assert_eq!(u64::from(physptr), EBDA_START + 16);
            let table = &bytes[16..];
            assert_eq!(&table[..4], b"PCMP");
            let len = u16::from_le_bytes(table[4..6].try_into().unwrap()) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "table checksum for {cpus} cpus");
            // Fits in the 1 KiB EBDA for small guests.
            if cpus <= 8 {
                assert!(bytes.len() <= 1024);
            }
        }
    }

    #[test]
    fn one_processor_entry_per_vcpu_with_only_the_first_as_bsp() {
        let bytes = build(3, EBDA_START).unwrap();
        let entries = &bytes[16 + 44..];
        for cpu in 0..3 {
            let e = &entries[cpu * 20..cpu * 20 + 20];
            assert_eq!(e[0], ENTRY_PROCESSOR);
            assert_eq!(e[1], cpu as u8, "APIC id");
            assert_eq!(e[3] & CPU_BSP != 0, cpu == 0);
            assert_eq!(e[3] & CPU_ENABLED, CPU_ENABLED);
        }
        assert_eq!(entries[60], ENTRY_BUS);
        assert_eq!(entries[68], ENTRY_IOAPIC);
        assert_eq!(entries[69], 4, "IOAPIC id after the vCPUs");
    }

    #[test]
    fn zero_or_too_many_cpus_are_refused() {
        assert!(build(0, EBDA_START).is_err());
        assert!(build(MAX_SUPPORTED_CPUS + 1, EBDA_START).is_err());
    }
}
