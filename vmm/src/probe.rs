//! A probe guest: a tiny ELF "kernel" whose code writes a line to the serial port, reports
//! init-started and an exit status through the boot/exit port, and resets through the i8042 —
//! the same ending path as the real guest program, without a Linux kernel. Checks the whole VMM
//! (VM, vCPU set-up, port bus, devices, endings) on any KVM host, in seconds.

use sandbox_protocol::exit_device::{self, Event};

/// Where the probe's code is loaded and entered (the usual Linux load address).
pub const PROBE_ENTRY: u64 = 0x100_0000;

/// Machine code (valid in 32-bit protected and 64-bit mode alike) that prints `text` on COM1,
/// reports init-started, ready, and `status`, then pulses the i8042 reset line.
pub fn exit_code(text: &[u8], status: u8) -> Vec<u8> {
    let mut c = Vec::new();
    // mov dx, 0x3f8
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]);
    for &b in text {
        // mov al, b ; out dx, al
        c.extend_from_slice(&[0xb0, b, 0xee]);
    }
    // mov dx, PORT
    c.extend_from_slice(&[0x66, 0xba]);
    c.extend_from_slice(&exit_device::PORT.to_le_bytes());
    for ev in [Event::InitStarted, Event::Ready, Event::Exit(status)] {
        // mov eax, value ; out dx, eax
        c.push(0xb8);
        c.extend_from_slice(&ev.encode().to_le_bytes());
        c.push(0xef);
    }
    // mov al, 0xfe ; out 0x64, al ; hlt ; jmp back to hlt
    c.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd]);
    c
}

/// A minimal x86_64 ELF executable with `code` as its only loadable segment, entered at
/// [`PROBE_ENTRY`].
pub fn elf_kernel(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let offset = (EHDR + PHDR) as u64;
    let mut f = vec![0u8; EHDR + PHDR];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1; // ELF version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&PROBE_ENTRY.to_le_bytes());
    f[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let p = EHDR;
    f[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f[p + 4..p + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    f[p + 8..p + 16].copy_from_slice(&offset.to_le_bytes());
    f[p + 16..p + 24].copy_from_slice(&PROBE_ENTRY.to_le_bytes());
    f[p + 24..p + 32].copy_from_slice(&PROBE_ENTRY.to_le_bytes());
    f[p + 32..p + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    f[p + 40..p + 48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    f[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    f.extend_from_slice(code);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::loader::{self, BootEntry, KernelFormat};
    use crate::layout;
    use std::path::Path;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn the_probe_is_a_loadable_elf_entered_at_its_code() {
        let code = exit_code(b"hi\n", 7);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe");
        std::fs::write(&path, elf_kernel(&code)).unwrap();
        let info = loader::inspect(&path).unwrap();
        assert_eq!(info.format, KernelFormat::Elf);
        let mem = layout::guest_memory(info.min_memory_mib).unwrap();
        let entry = loader::load(&mem, Path::new(&path), info.format).unwrap();
        assert!(matches!(entry, BootEntry::Linux64 { entry, .. } if entry.0 == PROBE_ENTRY));
        let mut loaded = vec![0u8; code.len()];
        mem.read_slice(&mut loaded, GuestAddress(PROBE_ENTRY)).unwrap();
        assert_eq!(loaded, code);
    }
}
