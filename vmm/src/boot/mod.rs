//! Everything needed to start the guest kernel: load it, describe the machine to it (command line,
//! memory map, MP table, CPUID) and set up the boot vCPU's registers.

pub mod cmdline;
pub mod cpuid;
pub mod elf_map;
pub mod loader;
pub mod mptable;
pub mod regs;
