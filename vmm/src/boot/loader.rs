//! Recognises the kernel file (bzImage or ELF vmlinux), estimates how much memory it needs,
//! loads it (a PVH vmlinux mapped from its file by [`super::elf_map`], anything else copied by
//! linux-loader), and writes what the chosen boot protocol hands the kernel: the
//! zero page (`boot_params` with the e820 map) for the Linux 64-bit protocol, or `hvm_start_info`
//! with its memory map for the PVH entry.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::error::VmmError;
use crate::layout::{self, MemoryMapEntry, CMDLINE_MAX_LEN, CMDLINE_START, HIMEM_START};

/// Room the kernel needs beyond its own image for early allocations, page tables and init.
pub const KERNEL_HEADROOM_BYTES: u64 = 16 << 20;
/// The smallest guest the VMM builds, whatever the kernel.
pub const MIN_MEMORY_MIB: u64 = 32;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELF_CLASS_64: u8 = 2;
const EM_X86_64: u16 = 62;
pub(super) const PT_LOAD: u32 = 1;
const BZIMAGE_MAGIC: u32 = 0x5372_6448; // "HdrS"
const XLF_KERNEL_64: u16 = 1;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// What kind of kernel file this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A compressed `bzImage` (boot protocol header `HdrS`).
    BzImage,
    /// An uncompressed x86_64 ELF `vmlinux`.
    Elf,
}

/// What the VMM learns from the kernel file before allocating anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub format: KernelFormat,
    /// Guest memory the kernel needs to boot, in MiB (image end plus headroom).
    pub min_memory_mib: u64,
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy)]
pub enum BootEntry {
    /// 64-bit Linux boot protocol: long mode, `rsi` = zero page.
    Linux64 {
        entry: GuestAddress,
        /// The bzImage's setup header, copied into the zero page; `None` for an ELF.
        setup_header: Option<setup_header>,
    },
    /// PVH: 32-bit protected mode, paging off, `ebx` = `hvm_start_info`.
    Pvh { entry: GuestAddress },
}

impl BootEntry {
    pub fn address(&self) -> GuestAddress {
        match self {
            BootEntry::Linux64 { entry, .. } | BootEntry::Pvh { entry } => *entry,
        }
    }
}

fn read_at(bytes: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    bytes.get(offset..offset.checked_add(len)?)
}

pub(super) fn le_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    read_at(bytes, offset, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

pub(super) fn le_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    read_at(bytes, offset, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(super) fn le_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    read_at(bytes, offset, 8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    })
}

fn mib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Reads the kernel file's headers: its format and the memory it needs.
pub fn inspect(path: &Path) -> Result<KernelInfo, VmmError> {
    let read_err = |source| VmmError::KernelRead {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut head = Vec::with_capacity(64 << 10);
    file.by_ref()
        .take(64 << 10)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    inspect_bytes(path, &head)
}

/// [`inspect`] on the first bytes (at least the headers) of a kernel file.
pub fn inspect_bytes(path: &Path, head: &[u8]) -> Result<KernelInfo, VmmError> {
    let not_a_kernel = || VmmError::KernelFormat {
        path: path.to_path_buf(),
    };
    if head.starts_with(ELF_MAGIC) {
        if head.get(4) != Some(&ELF_CLASS_64) || le_u16(head, 0x12) != Some(EM_X86_64) {
            return Err(not_a_kernel());
        }
        let phoff = le_u64(head, 0x20).ok_or_else(not_a_kernel)? as usize;
        let phentsize = le_u16(head, 0x36).ok_or_else(not_a_kernel)? as usize;
        let phnum = le_u16(head, 0x38).ok_or_else(not_a_kernel)? as usize;
        let mut end = HIMEM_START;
        for i in 0..phnum {
            let at = phoff.saturating_add(i.saturating_mul(phentsize));
            // Headers past what was read are ignored: the loader checks them properly.
            let (Some(kind), Some(paddr), Some(memsz)) =
                (le_u32(head, at), le_u64(head, at + 0x18), le_u64(head, at + 0x28))
            else {
                break;
            };
            if kind == PT_LOAD {
                end = end.max(paddr.saturating_add(memsz));
            }
        }
        return Ok(KernelInfo {
            format: KernelFormat::Elf,
            min_memory_mib: MIN_MEMORY_MIB.max(mib_ceil(end.saturating_add(KERNEL_HEADROOM_BYTES))),
        });
    }
    if le_u32(head, 0x202) == Some(BZIMAGE_MAGIC) {
        let xloadflags = le_u16(head, 0x236).unwrap_or(0);
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err(VmmError::Kernel32Bit {
                path: path.to_path_buf(),
            });
        }
        let pref = le_u64(head, 0x258).unwrap_or(HIMEM_START).max(HIMEM_START);
        let init_size = u64::from(le_u32(head, 0x260).unwrap_or(0));
        let end = pref
            .saturating_add(init_size)
            .saturating_add(KERNEL_HEADROOM_BYTES);
        return Ok(KernelInfo {
            format: KernelFormat::BzImage,
            min_memory_mib: MIN_MEMORY_MIB.max(mib_ceil(end)),
        });
    }
    Err(not_a_kernel())
}

/// Loads the kernel into guest memory; an ELF with a PVH note boots through PVH.
pub fn load(mem: &GuestMemoryMmap, path: &Path, format: KernelFormat) -> Result<BootEntry, VmmError> {
    let mut file = File::open(path).map_err(|source| VmmError::KernelRead {
        path: path.to_path_buf(),
        source,
    })?;
    let load_err = |e: linux_loader::loader::Error| VmmError::KernelLoad {
        path: PathBuf::from(path),
        detail: e.to_string(),
    };
    let himem = Some(GuestAddress(HIMEM_START));
    match format {
        KernelFormat::Elf => {
            let mapped = super::elf_map::map(mem, &file).map_err(|detail| VmmError::KernelLoad {
                path: PathBuf::from(path),
                detail,
            })?;
            if let Some(m) = mapped {
                sandbox_protocol::trace::note("kernel.load", || {
                    format!(
                        "ELF segments mapped copy-on-write from the file at guest {:#x}..{:#x} (PVH)",
                        m.start, m.end
                    )
                });
                return Ok(BootEntry::Pvh { entry: m.pvh_entry });
            }
            let loaded = Elf::load(mem, None, &mut file, himem).map_err(load_err)?;
            sandbox_protocol::trace::note("kernel.load", || {
                format!(
                    "ELF segments at guest {:#x}..{:#x}",
                    loaded.kernel_load.0, loaded.kernel_end
                )
            });
            Ok(match loaded.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => BootEntry::Pvh { entry },
                _ => BootEntry::Linux64 {
                    entry: loaded.kernel_load,
                    setup_header: None,
                },
            })
        }
        KernelFormat::BzImage => {
            let loaded = BzImage::load(mem, None, &mut file, himem).map_err(load_err)?;
            sandbox_protocol::trace::note("kernel.load", || {
                format!(
                    "bzImage protected-mode code at guest {:#x}..{:#x}",
                    loaded.kernel_load.0, loaded.kernel_end
                )
            });
            // The 64-bit entry point (`startup_64`) is 0x200 past the protected-mode code.
            Ok(BootEntry::Linux64 {
                entry: GuestAddress(loaded.kernel_load.0 + 0x200),
                setup_header: loaded.setup_header,
            })
        }
    }
}

/// Writes the command line and the boot protocol's structures for `entry` into guest memory.
pub fn write_boot_info(
    mem: &GuestMemoryMmap,
    entry: &BootEntry,
    cmdline: &Cmdline,
    memory_map: &[MemoryMapEntry],
) -> Result<(), VmmError> {
    let boot_err = |e: linux_loader::configurator::Error| VmmError::KernelLoad {
        path: PathBuf::from("(boot parameters)"),
        detail: e.to_string(),
    };
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(|e| VmmError::KernelLoad {
        path: PathBuf::from("(command line)"),
        detail: e.to_string(),
    })?;
    let cmdline_len = cmdline.as_cstring().map(|c| c.as_bytes().len()).unwrap_or(0) as u32;
    match entry {
        BootEntry::Linux64 { setup_header, .. } => {
            let params = zero_page(setup_header.as_ref(), cmdline_len, memory_map);
            let boot = BootParams::new(&params, GuestAddress(layout::ZERO_PAGE_START));
            LinuxBootConfigurator::write_bootparams(&boot, mem).map_err(boot_err)
        }
        BootEntry::Pvh { .. } => {
            let table: Vec<hvm_memmap_table_entry> = memory_map
                .iter()
                .map(|&(addr, size, kind)| hvm_memmap_table_entry {
                    addr,
                    size,
                    type_: kind.e820_type(),
                    reserved: 0,
                })
                .collect();
            let info = hvm_start_info {
                magic: XEN_HVM_START_MAGIC_VALUE,
                version: 1,
                cmdline_paddr: CMDLINE_START,
                memmap_paddr: layout::PVH_MEMMAP_START,
                memmap_entries: table.len() as u32,
                ..Default::default()
            };
            let mut boot = BootParams::new(&info, GuestAddress(layout::PVH_INFO_START));
            boot.set_sections(&table, GuestAddress(layout::PVH_MEMMAP_START));
            PvhBootConfigurator::write_bootparams(&boot, mem).map_err(boot_err)
        }
    }
}

/// The Linux zero page: the bzImage's header (or a minimal one for an ELF), our command line and
/// loader identity, and the e820 map.
pub fn zero_page(
    header: Option<&setup_header>,
    cmdline_len: u32,
    memory_map: &[MemoryMapEntry],
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = *h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = BZIMAGE_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len.min(CMDLINE_MAX_LEN as u32 - 1);
    let mut n = 0;
    for &(addr, size, kind) in memory_map.iter().take(params.e820_table.len()) {
        params.e820_table[n] = boot_e820_entry {
            addr,
            size,
            r#type: kind.e820_type(),
        };
        n += 1;
    }
    params.e820_entries = n as u8;
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn elf_header(class: u8, machine: u16, load_end: u64) -> Vec<u8> {
        let mut h = vec![0u8; 0x40 + 0x38];
        h[..4].copy_from_slice(ELF_MAGIC);
        h[4] = class;
        h[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        h[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        h[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        h[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        h[0x40..0x44].copy_from_slice(&PT_LOAD.to_le_bytes());
        h[0x40 + 0x18..0x40 + 0x20].copy_from_slice(&0x100_0000u64.to_le_bytes());
        h[0x40 + 0x28..0x40 + 0x30].copy_from_slice(&(load_end - 0x100_0000).to_le_bytes());
        h
    }

    fn bzimage_header(xloadflags: u16, init_size: u32) -> Vec<u8> {
        let mut h = vec![0u8; 0x300];
        h[0x202..0x206].copy_from_slice(&BZIMAGE_MAGIC.to_le_bytes());
        h[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        h[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
        h[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        h
    }

    #[test]
    fn recognises_an_x86_64_elf_and_sizes_it_from_its_load_segments() {
        let info = inspect_bytes(Path::new("vmlinux"), &elf_header(2, 62, 0x400_0000)).unwrap();
        assert_eq!(info.format, KernelFormat::Elf);
        // Segments end at 64 MiB, plus 16 MiB headroom.
        assert_eq!(info.min_memory_mib, 80);
    }

    #[test]
    fn recognises_a_64_bit_bzimage_and_sizes_it_from_init_size() {
        let info = inspect_bytes(Path::new("bzImage"), &bzimage_header(1, 40 << 20)).unwrap();
        assert_eq!(info.format, KernelFormat::BzImage);
        assert_eq!(info.min_memory_mib, 16 + 40 + 16);
        let err = inspect_bytes(Path::new("bzImage32"), &bzimage_header(0, 1 << 20)).unwrap_err();
        assert!(matches!(err, VmmError::Kernel32Bit { .. }), "{err}");
    }

    #[test]
    fn anything_else_is_neither_bzimage_nor_elf() {
        for (name, bytes) in [
            ("text", b"#!/bin/sh\necho hi\n".to_vec()),
            ("empty", Vec::new()),
            ("elf32", elf_header(1, 62, 0x200_0000)),
            ("arm64 elf", elf_header(2, 183, 0x200_0000)),
        ] {
            let err = inspect_bytes(Path::new(name), &bytes).unwrap_err();
            assert!(matches!(err, VmmError::KernelFormat { .. }), "{name}: {err}");
            assert!(err.to_string().contains("neither a bzImage nor an ELF"), "{err}");
        }
    }

    #[test]
    fn inspect_reads_the_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, elf_header(2, 62, 0x200_0000)).unwrap();
        assert_eq!(inspect(&path).unwrap().format, KernelFormat::Elf);
        let err = inspect(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn zero_page_carries_cmdline_loader_and_e820() {
        let map = layout::memory_map(256 << 20);
        let p = zero_page(None, 100, &map);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 100);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.header }, BZIMAGE_MAGIC);
        assert_eq!(p.e820_entries as usize, map.len());
        assert_eq!({ p.e820_table[2].addr }, HIMEM_START);
        assert_eq!({ p.e820_table[2].r#type }, 1);
    }

    #[test]
    fn pvh_boot_info_is_written_where_the_registers_point() {
        let mem = layout::guest_memory(64).unwrap();
        let cmdline = Cmdline::try_from("console=ttyS0 -- init", CMDLINE_MAX_LEN).unwrap();
        let map = layout::memory_map(64 << 20);
        let entry = BootEntry::Pvh {
            entry: GuestAddress(0x100_0000),
        };
        write_boot_info(&mem, &entry, &cmdline, &map).unwrap();
        let magic: u32 = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(magic, XEN_HVM_START_MAGIC_VALUE);
        let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(info.memmap_entries as usize, map.len());
        let first: hvm_memmap_table_entry = mem.read_obj(GuestAddress(layout::PVH_MEMMAP_START)).unwrap();
        assert_eq!((first.addr, first.type_), (0, 1));
        let mut text = [0u8; 22];
        mem.read_slice(&mut text, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&text, b"console=ttyS0 -- init\0");
    }
}
