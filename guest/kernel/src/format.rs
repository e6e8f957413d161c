//! Telling a bootable x86 kernel file from anything else: a bzImage (the Linux boot protocol's
//! "HdrS" header) or an uncompressed ELF vmlinux for x86-64 (booted through its PVH entry).

use crate::KernelError;
use std::io::Read;
use std::path::Path;

/// Which kind of kernel file a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A compressed kernel with the x86 boot protocol header ("HdrS" at 0x202).
    BzImage,
    /// An uncompressed 64-bit x86 ELF kernel image.
    ElfVmlinux,
}

const HDRS_OFFSET: usize = 0x202;
const HDRS_MAGIC: &[u8; 4] = b"HdrS";
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const EM_X86_64: u16 = 62;

/// Reads the head of `path` and says whether it is a bzImage or an x86-64 ELF vmlinux.
pub fn validate_kernel_file(path: &Path) -> Result<KernelFormat, KernelError> {
    let mut file = std::fs::File::open(path).map_err(|e| KernelError::io("cannot open kernel", path, e))?;
    let mut head = Vec::with_capacity(0x210);
    file.by_ref()
        .take(0x210)
        .read_to_end(&mut head)
        .map_err(|e| KernelError::io("cannot read kernel", path, e))?;
    classify(&head).map_err(|reason| KernelError::NotAKernel {
        path: path.to_path_buf(),
        reason,
    })
}

/// Classifies the first bytes of a file (at least 0x206 for a bzImage).
fn classify(head: &[u8]) -> Result<KernelFormat, String> {
    if head.len() >= 4 && &head[..4] == ELF_MAGIC {
        let class = head.get(4).copied();
        let machine = head.get(0x12..0x14).map(|b| u16::from_le_bytes([b[0], b[1]]));
        return match (class, machine) {
            (Some(ELFCLASS64), Some(EM_X86_64)) => Ok(KernelFormat::ElfVmlinux),
            (_, Some(m)) => Err(format!(
                "an ELF file, but not a 64-bit x86 one (class {}, machine {m}): pass an x86-64 vmlinux or a bzImage",
                class.unwrap_or(0)
            )),
            _ => Err("a truncated ELF file: pass a bzImage or an ELF vmlinux".to_string()),
        };
    }
    if head.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(HDRS_MAGIC.as_slice()) {
        return Ok(KernelFormat::BzImage);
    }
    Err("neither a bzImage nor an ELF vmlinux: pass a bzImage or an ELF vmlinux".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_32_bit_elf_is_refused_with_the_reason() {
        let mut head = vec![0u8; 64];
        head[..4].copy_from_slice(ELF_MAGIC);
        head[4] = 1;
        head[0x12] = 3;
        let err = classify(&head).unwrap_err();
        assert!(err.contains("not a 64-bit x86"), "{err}");
    }

    #[test]
    fn a_short_file_is_neither() {
        assert!(classify(b"MZ").unwrap_err().contains("neither"));
    }
}
