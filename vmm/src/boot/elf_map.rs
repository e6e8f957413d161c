//! Maps a PVH-capable ELF vmlinux into guest memory instead of copying it: each `PT_LOAD`
//! segment's file pages are mapped `MAP_PRIVATE | MAP_FIXED` over the guest RAM mapping, so the
//! guest reads the kernel straight from the page cache and copies a page only when it writes
//! to it (copy-on-write). Nothing is read at boot but the headers.
//!
//! Why not linux-loader's `Elf::load`: it copies every segment (about 10 MiB for the guest
//! kernel). On hardware that is a few milliseconds; in the lab, where the copy lands on pages
//! the emulator has translated code for, it took 80 ms to over a second. linux-loader still
//! loads everything this module declines: no PVH note, segments sharing a page, a file offset
//! not congruent to its address, or a segment outside guest RAM.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::loader::{le_u16, le_u32, le_u64, PT_LOAD};

const PAGE: u64 = 4096;
const PT_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit PVH entry point, in a note named "Xen".
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const MAX_PHDRS: u16 = 64;

/// One program header, the fields used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// What was mapped: the PVH entry and the guest range the load segments cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    pub pvh_entry: GuestAddress,
    pub start: u64,
    pub end: u64,
}

/// Reads the program headers of a 64-bit ELF; `None` when they cannot be read or make no sense.
pub fn segments(file: &File) -> Option<Vec<Segment>> {
    let mut ehdr = [0u8; 64];
    file.read_exact_at(&mut ehdr, 0).ok()?;
    let phoff = le_u64(&ehdr, 0x20)?;
    let phentsize = le_u16(&ehdr, 0x36)?;
    let phnum = le_u16(&ehdr, 0x38)?;
    if phentsize < 56 || phnum == 0 || phnum > MAX_PHDRS {
        return None;
    }
    let mut table = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    file.read_exact_at(&mut table, phoff).ok()?;
    (0..usize::from(phnum))
        .map(|i| {
            let h = &table[i * usize::from(phentsize)..];
            Some(Segment {
                kind: le_u32(h, 0)?,
                offset: le_u64(h, 0x08)?,
                paddr: le_u64(h, 0x18)?,
                filesz: le_u64(h, 0x20)?,
                memsz: le_u64(h, 0x28)?,
            })
        })
        .collect()
}

/// The PVH entry from the "Xen" notes of the `PT_NOTE` segments, if any.
pub fn pvh_entry(file: &File, segments: &[Segment]) -> Option<u64> {
    for s in segments
        .iter()
        .filter(|s| s.kind == PT_NOTE && s.filesz <= 1 << 16)
    {
        let mut notes = vec![0u8; s.filesz as usize];
        file.read_exact_at(&mut notes, s.offset).ok()?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = le_u32(&notes, at)? as usize;
            let descsz = le_u32(&notes, at + 4)? as usize;
            let kind = le_u32(&notes, at + 8)?;
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let name = notes.get(name_at..name_at + namesz)?;
            if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                return le_u32(&notes, desc_at).map(u64::from);
            }
            at = desc_at + descsz.div_ceil(4) * 4;
        }
    }
    None
}

/// Whether the load segments can be mapped: page-congruent offsets, no page shared by two
/// segments, file data inside the file, memory inside guest RAM of `ram_bytes`.
pub fn mappable(loads: &[Segment], file_len: u64, ram_bytes: u64) -> bool {
    let mut pages: Vec<(u64, u64)> = Vec::new();
    for s in loads {
        let fits = s.filesz <= s.memsz
            && s.offset.checked_add(s.filesz).is_some_and(|e| e <= file_len)
            && s.paddr.checked_add(s.memsz).is_some_and(|e| e <= ram_bytes);
        if !fits || s.offset % PAGE != s.paddr % PAGE {
            return false;
        }
        let first = s.paddr / PAGE;
        let last = (s.paddr + s.memsz.max(1)).div_ceil(PAGE);
        if pages.iter().any(|&(a, b)| first < b && a < last) {
            return false;
        }
        pages.push((first, last));
    }
    !loads.is_empty()
}

/// Maps the kernel's load segments into `mem` (see the module doc). `Ok(None)`: this file is
/// left to linux-loader.
pub fn map(mem: &GuestMemoryMmap, file: &File) -> Result<Option<Mapped>, String> {
    let Some(all) = segments(file) else {
        return Ok(None);
    };
    let Some(entry) = pvh_entry(file, &all) else {
        return Ok(None);
    };
    let loads: Vec<Segment> = all.into_iter().filter(|s| s.kind == PT_LOAD).collect();
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot stat the kernel: {e}"))?
        .len();
    // Guest RAM below the MMIO hole is one region starting at 0 (layout::ram_regions).
    let Some(region) = mem.iter().next().filter(|r| r.start_addr().0 == 0) else {
        return Ok(None);
    };
    if !mappable(&loads, file_len, region.len()) {
        return Ok(None);
    }
    let base = region
        .get_host_address(vm_memory::MemoryRegionAddress(0))
        .map_err(|e| format!("guest RAM has no host address: {e}"))?;
    for s in loads.iter().filter(|s| s.filesz > 0) {
        let page_pa = s.paddr - s.paddr % PAGE;
        let len = (s.paddr + s.filesz).div_ceil(PAGE) * PAGE - page_pa;
        // SAFETY: `page_pa..page_pa + len` lies inside the guest RAM mapping (checked by
        // `mappable`: `paddr + memsz <= region.len()`, and the last page is whole because the
        // region's length is a multiple of the page size), which vm-memory owns for the life
        // of `mem`; MAP_FIXED replaces those pages in place with a private file mapping of the
        // same protection, so every pointer into guest RAM stays valid. Nothing else refers to
        // those pages yet: the guest has not run.
        let at = unsafe {
            libc::mmap(
                base.add(page_pa as usize).cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                (s.offset - s.paddr % PAGE) as libc::off_t,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(format!(
                "mmap of the segment at guest {:#x}: {}",
                s.paddr,
                std::io::Error::last_os_error()
            ));
        }
        // The mapped pages also carry file bytes around the segment: zero what lies before it in
        // its first page and after its file data in its last page (the rest of .bss is still
        // untouched anonymous memory, so zero).
        let zero = |from: u64, to: u64| -> Result<(), String> {
            if to > from {
                mem.write_slice(&vec![0u8; (to - from) as usize], GuestAddress(from))
                    .map_err(|e| format!("zeroing guest {from:#x}..{to:#x}: {e}"))?;
            }
            Ok(())
        };
        zero(page_pa, s.paddr)?;
        zero(s.paddr + s.filesz, page_pa + len)?;
    }
    let start = loads.iter().map(|s| s.paddr).min().unwrap_or(0);
    let end = loads.iter().map(|s| s.paddr + s.memsz).max().unwrap_or(0);
    Ok(Some(Mapped {
        pvh_entry: GuestAddress(entry),
        start,
        end,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(offset: u64, paddr: u64, filesz: u64, memsz: u64) -> Segment {
        Segment {
            kind: PT_LOAD,
            offset,
            paddr,
            filesz,
            memsz,
        }
    }

    #[test]
    fn congruent_disjoint_segments_inside_ram_are_mappable() {
        let loads = [
            load(0x20_0000, 0x100_0000, 0x88_c3e0, 0x88_c3e0),
            load(0xee_3000, 0x1ae_3000, 0x8_f000, 0x13_5000),
        ];
        assert!(mappable(&loads, 0x100_0000, 128 << 20));
    }

    #[test]
    fn anything_else_is_left_to_the_copying_loader() {
        let ram = 128 << 20;
        // Offset and address disagree within a page.
        assert!(!mappable(&[load(0x1010, 0x100_0000, 0x100, 0x100)], 1 << 24, ram));
        // Two segments in one page.
        assert!(!mappable(
            &[
                load(0x1000, 0x100_0000, 0x100, 0x100),
                load(0x1200, 0x100_0200, 0x10, 0x10)
            ],
            1 << 24,
            ram
        ));
        // File data past the end of the file; memory past the end of RAM; filesz > memsz.
        assert!(!mappable(
            &[load(0x1000, 0x100_0000, 0x2000, 0x2000)],
            0x2000,
            ram
        ));
        assert!(!mappable(
            &[load(0x1000, ram - 0x1000, 0x10, 0x2000)],
            1 << 24,
            ram
        ));
        assert!(!mappable(&[load(0x1000, 0x100_0000, 0x20, 0x10)], 1 << 24, ram));
        assert!(!mappable(&[], 1 << 24, ram));
    }

    /// A two-segment ELF with a PVH note, written to a file: mapped, the guest sees the segment
    /// bytes, zeros around them and in .bss, and writes stay private to the guest.
    #[test]
    fn maps_segments_copy_on_write_and_finds_the_pvh_entry() {
        let mut elf = vec![0u8; 0x4000];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // phoff
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        let phdr = |elf: &mut Vec<u8>, i: usize, kind: u32, off: u64, pa: u64, fs: u64, ms: u64| {
            let h = 64 + i * 56;
            elf[h..h + 4].copy_from_slice(&kind.to_le_bytes());
            elf[h + 8..h + 16].copy_from_slice(&off.to_le_bytes());
            elf[h + 0x18..h + 0x20].copy_from_slice(&pa.to_le_bytes());
            elf[h + 0x20..h + 0x28].copy_from_slice(&fs.to_le_bytes());
            elf[h + 0x28..h + 0x30].copy_from_slice(&ms.to_le_bytes());
        };
        phdr(&mut elf, 0, PT_LOAD, 0x1000, 0x10_0000, 0x1800, 0x1800);
        phdr(&mut elf, 1, PT_LOAD, 0x3000, 0x20_0000, 0x10, 0x3000);
        phdr(&mut elf, 2, PT_NOTE, 0x400, 0, 20, 20);
        // Note: namesz 4, descsz 4, type 18, "Xen\0", entry 0x10_0040.
        for (i, v) in [4u32, 4, 18].iter().enumerate() {
            elf[0x400 + i * 4..0x404 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        elf[0x40c..0x410].copy_from_slice(b"Xen\0");
        elf[0x410..0x414].copy_from_slice(&0x10_0040u32.to_le_bytes());
        for b in &mut elf[0x1000..0x4000] {
            *b = 0xab;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, &elf).unwrap();
        let file = File::open(&path).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let mapped = map(&mem, &file).unwrap().unwrap();
        assert_eq!(mapped.pvh_entry, GuestAddress(0x10_0040));
        assert_eq!((mapped.start, mapped.end), (0x10_0000, 0x20_3000));
        let byte = |a: u64| mem.read_obj::<u8>(GuestAddress(a)).unwrap();
        assert_eq!(byte(0x10_0000), 0xab);
        assert_eq!(byte(0x10_17ff), 0xab);
        assert_eq!(byte(0x10_1800), 0, "after the file data, in the last mapped page");
        assert_eq!(byte(0x20_000f), 0xab);
        assert_eq!(byte(0x20_0010), 0, ".bss in the mapped page");
        assert_eq!(byte(0x20_2000), 0, ".bss beyond it");
        mem.write_obj(0x55u8, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(byte(0x10_0000), 0x55);
        drop(mem);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            elf,
            "the guest's writes never reach the file"
        );
    }
}
