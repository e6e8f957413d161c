//! The snapshot's machine-state file: one versioned, checksummed file beside the guest memory
//! file, refused in one line when it cannot be this VMM's to restore — another VMM version,
//! another guest kernel, another size, a host CPU lacking features the vCPUs used, or a file
//! that is truncated or corrupted.
//!
//! Layout: [`MAGIC`] (8 bytes), the body's length (u64, little-endian), the body (JSON of a
//! [`Snapshot`]), the body's SHA-256 (32 bytes). The header is checked before the state is
//! decoded, so a file of another format version is refused by its version, not by a parse error.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"SBXSNAP1";
/// The body's layout version; a change to the state's shape bumps it.
pub const FORMAT_VERSION: u32 = 1;
/// The largest body read (the machine state is kilobytes; guest memory has its own file).
pub const MAX_BODY: u64 = 64 << 20;

const LEN_BYTES: usize = 8;
const SUM_BYTES: usize = 32;

/// CPU features the snapshot's vCPUs were given, as CPUID bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFeatures {
    pub leaf1_ecx: u32,
    pub leaf1_edx: u32,
    pub leaf7_ebx: u32,
    pub leaf7_ecx: u32,
    pub leaf7_edx: u32,
}

impl CpuFeatures {
    /// The features set here that `host` lacks, as `CPUID.<leaf>:<register> bit <n>`.
    pub fn missing_from(&self, host: &CpuFeatures) -> Vec<String> {
        let registers = [
            ("CPUID.1:ECX", self.leaf1_ecx, host.leaf1_ecx),
            ("CPUID.1:EDX", self.leaf1_edx, host.leaf1_edx),
            ("CPUID.7.0:EBX", self.leaf7_ebx, host.leaf7_ebx),
            ("CPUID.7.0:ECX", self.leaf7_ecx, host.leaf7_ecx),
            ("CPUID.7.0:EDX", self.leaf7_edx, host.leaf7_edx),
        ];
        registers
            .iter()
            .flat_map(|&(name, used, has)| {
                (0..32)
                    .filter(move |bit| used & !has & (1 << bit) != 0)
                    .map(move |bit| format!("{name} bit {bit}"))
            })
            .collect()
    }
}

/// What the snapshot was made of; a restore must match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// The VMM that made it (`CARGO_PKG_VERSION`).
    pub vmm_version: String,
    /// The SHA-256 of the guest kernel file it booted.
    pub kernel_sha256: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub cpu_features: CpuFeatures,
}

/// A machine-state file's contents: the header and the state `S`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot<S> {
    pub header: Header,
    pub state: S,
}

/// What a restore needs the snapshot to be.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub vmm_version: &'a str,
    pub kernel_sha256: &'a str,
    /// `None`: whatever the snapshot has (a restore without `--memory`).
    pub memory_mib: Option<u64>,
    pub vcpus: Option<u32>,
    pub host_features: CpuFeatures,
}

const REMEDY: &str = "make a new one with `sandbox snapshot create`";

/// Why a machine-state file cannot be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{} is not a sandbox snapshot (no {MAGIC:?} at its start)", path.display())]
    NotASnapshot { path: PathBuf },
    #[error("snapshot {} is truncated: {found} bytes where its header promises {expected}; {REMEDY}", path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("snapshot {} is corrupted: its checksum does not match its contents; {REMEDY}", path.display())]
    Corrupted { path: PathBuf },
    #[error("snapshot {} has format {found}, this VMM reads format {FORMAT_VERSION}; {REMEDY}", path.display())]
    Format { path: PathBuf, found: u32 },
    #[error("snapshot {} cannot be read: {detail}; {REMEDY}", path.display())]
    Decode { path: PathBuf, detail: String },
    #[error("snapshot {} was made by VMM {found}, this is {ours}; {REMEDY}", path.display())]
    VmmVersion {
        path: PathBuf,
        found: String,
        ours: String,
    },
    #[error("snapshot {} was made with another guest kernel (sha256 {found}, now {ours}); {REMEDY}", path.display())]
    Kernel {
        path: PathBuf,
        found: String,
        ours: String,
    },
    #[error("snapshot {} has {snapshot} MiB of guest memory, {asked} MiB were asked for: drop --memory or {REMEDY}", path.display())]
    Memory {
        path: PathBuf,
        snapshot: u64,
        asked: u64,
    },
    #[error("snapshot {} has {snapshot} vCPUs, {asked} were asked for: drop --cpus or {REMEDY}", path.display())]
    Vcpus {
        path: PathBuf,
        snapshot: u32,
        asked: u32,
    },
    #[error("snapshot {} used CPU features this host lacks ({}): restore it on the kind of host that made it, or {REMEDY}", path.display(), missing.join(", "))]
    CpuFeatures { path: PathBuf, missing: Vec<String> },
}

/// Writes `snapshot` to `path` (mode 0600, through a temporary file renamed into place).
pub fn write<S: Serialize>(path: &Path, snapshot: &Snapshot<S>) -> Result<(), SnapshotFileError> {
    let io = |what| {
        move |source| SnapshotFileError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    let body = serde_json::to_vec(snapshot).map_err(|e| SnapshotFileError::Decode {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".snapshot-")
        .tempfile_in(dir)
        .map_err(io("cannot create a temporary file beside it"))?;
    tmp.write_all(MAGIC)
        .and_then(|()| tmp.write_all(&(body.len() as u64).to_le_bytes()))
        .and_then(|()| tmp.write_all(&body))
        .and_then(|()| tmp.write_all(&Sha256::digest(&body)))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io("cannot write"))?;
    tmp.persist(path)
        .map_err(|e| io("cannot rename into place")(e.error))?;
    Ok(())
}

/// Reads the snapshot at `path`, refusing it (in that order) unless it is whole and intact, of
/// this format, this VMM and this kernel, of the size asked for, and for CPU features this host
/// has.
pub fn read<S: DeserializeOwned>(path: &Path, expect: &Expect<'_>) -> Result<Snapshot<S>, SnapshotFileError> {
    let path_buf = || path.to_path_buf();
    let bytes = std::fs::read(path).map_err(|source| SnapshotFileError::Io {
        path: path_buf(),
        what: "cannot read",
        source,
    })?;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotFileError::NotASnapshot { path: path_buf() });
    }
    let found = bytes.len() as u64;
    let Some(len_bytes) = bytes.get(MAGIC.len()..MAGIC.len() + LEN_BYTES) else {
        return Err(SnapshotFileError::Truncated {
            path: path_buf(),
            expected: (MAGIC.len() + LEN_BYTES) as u64,
            found,
        });
    };
    let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or_default());
    if len > MAX_BODY {
        return Err(SnapshotFileError::Corrupted { path: path_buf() });
    }
    let start = MAGIC.len() + LEN_BYTES;
    let expected = (start + SUM_BYTES) as u64 + len;
    if found != expected {
        return Err(SnapshotFileError::Truncated {
            path: path_buf(),
            expected,
            found,
        });
    }
    let body = &bytes[start..start + len as usize];
    if Sha256::digest(body).as_slice() != &bytes[start + len as usize..] {
        return Err(SnapshotFileError::Corrupted { path: path_buf() });
    }
    let decode = |e: serde_json::Error| SnapshotFileError::Decode {
        path: path_buf(),
        detail: e.to_string(),
    };
    // The format first, from the header alone: another version's state may not parse as ours.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(decode)?;
    let format = value["header"]["format"].as_u64().unwrap_or(0);
    if format != u64::from(FORMAT_VERSION) {
        return Err(SnapshotFileError::Format {
            path: path_buf(),
            found: u32::try_from(format).unwrap_or(u32::MAX),
        });
    }
    let snapshot: Snapshot<S> = serde_json::from_value(value).map_err(decode)?;
    check(path, &snapshot.header, expect)?;
    Ok(snapshot)
}

fn check(path: &Path, h: &Header, expect: &Expect<'_>) -> Result<(), SnapshotFileError> {
    let path = path.to_path_buf();
    if h.vmm_version != expect.vmm_version {
        return Err(SnapshotFileError::VmmVersion {
            path,
            found: h.vmm_version.clone(),
            ours: expect.vmm_version.to_string(),
        });
    }
    if h.kernel_sha256 != expect.kernel_sha256 {
        return Err(SnapshotFileError::Kernel {
            path,
            found: h.kernel_sha256.clone(),
            ours: expect.kernel_sha256.to_string(),
        });
    }
    if let Some(asked) = expect.memory_mib.filter(|m| *m != h.memory_mib) {
        return Err(SnapshotFileError::Memory {
            path,
            snapshot: h.memory_mib,
            asked,
        });
    }
    if let Some(asked) = expect.vcpus.filter(|v| *v != h.vcpus) {
        return Err(SnapshotFileError::Vcpus {
            path,
            snapshot: h.vcpus,
            asked,
        });
    }
    let missing = h.cpu_features.missing_from(&expect.host_features);
    if !missing.is_empty() {
        return Err(SnapshotFileError::CpuFeatures { path, missing });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct State {
        rip: u64,
        devices: Vec<String>,
    }

    const KERNEL: &str = "ab12";

    fn features() -> CpuFeatures {
        CpuFeatures {
            leaf1_ecx: 0b1011,
            leaf7_ebx: 1 << 5,
            ..CpuFeatures::default()
        }
    }

    fn snapshot() -> Snapshot<State> {
        Snapshot {
            header: Header {
                format: FORMAT_VERSION,
                vmm_version: "0.1.0".into(),
                kernel_sha256: KERNEL.into(),
                memory_mib: 128,
                vcpus: 1,
                cpu_features: features(),
            },
            state: State {
                rip: 0xffff_ffff_8100_0000,
                devices: vec!["serial".into(), "virtio-blk".into()],
            },
        }
    }

    fn expect() -> Expect<'static> {
        Expect {
            vmm_version: "0.1.0",
            kernel_sha256: KERNEL,
            memory_mib: None,
            vcpus: None,
            host_features: features(),
        }
    }

    fn written() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.snap");
        write(&path, &snapshot()).unwrap();
        (dir, path)
    }

    #[test]
    fn a_snapshot_reads_back_as_written_and_is_private() {
        let (_dir, path) = written();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back: Snapshot<State> = read(&path, &expect()).unwrap();
        assert_eq!(back, snapshot());
        let sized = Expect {
            memory_mib: Some(128),
            vcpus: Some(1),
            ..expect()
        };
        assert!(read::<State>(&path, &sized).is_ok());
    }

    #[test]
    fn a_damaged_file_is_refused_by_what_is_wrong_with_it() {
        let (_dir, path) = written();
        let good = std::fs::read(&path).unwrap();
        let refused = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read::<State>(&path, &expect()).unwrap_err()
        };
        let e = refused(&good[..good.len() - 10]);
        assert!(matches!(e, SnapshotFileError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("truncated") && e.to_string().contains("snapshot create"));
        let e = refused(&good[..4]);
        assert!(matches!(e, SnapshotFileError::NotASnapshot { .. }), "{e}");
        let e = refused(&good[..MAGIC.len() + 3]);
        assert!(matches!(e, SnapshotFileError::Truncated { .. }), "{e}");
        let mut flipped = good.clone();
        flipped[MAGIC.len() + LEN_BYTES + 5] ^= 0x20;
        let e = refused(&flipped);
        assert!(matches!(e, SnapshotFileError::Corrupted { .. }), "{e}");
        let mut huge = good.clone();
        huge[MAGIC.len()..MAGIC.len() + LEN_BYTES].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(refused(&huge), SnapshotFileError::Corrupted { .. }));
        let e = refused(b"\x7fELF and the rest of a kernel");
        assert!(matches!(e, SnapshotFileError::NotASnapshot { .. }), "{e}");
    }

    #[test]
    fn another_format_vmm_kernel_size_or_cpu_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.snap");
        let refused = |s: Snapshot<State>, expect: Expect<'_>| {
            write(&path, &s).unwrap();
            let e = read::<State>(&path, &expect).unwrap_err();
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
            e
        };
        let mut s = snapshot();
        s.header.format = FORMAT_VERSION + 1;
        let e = refused(s, expect());
        assert!(
            matches!(e, SnapshotFileError::Format { found, .. } if found == FORMAT_VERSION + 1),
            "{e}"
        );
        let mut s = snapshot();
        s.header.vmm_version = "0.0.9".into();
        assert!(matches!(
            refused(s, expect()),
            SnapshotFileError::VmmVersion { .. }
        ));
        let mut s = snapshot();
        s.header.kernel_sha256 = "ff00".into();
        assert!(matches!(refused(s, expect()), SnapshotFileError::Kernel { .. }));
        let e = refused(
            snapshot(),
            Expect {
                memory_mib: Some(256),
                ..expect()
            },
        );
        assert!(
            e.to_string().contains("128 MiB") && e.to_string().contains("256 MiB"),
            "{e}"
        );
        let e = refused(
            snapshot(),
            Expect {
                vcpus: Some(2),
                ..expect()
            },
        );
        assert!(
            matches!(
                e,
                SnapshotFileError::Vcpus {
                    snapshot: 1,
                    asked: 2,
                    ..
                }
            ),
            "{e}"
        );
        let e = refused(
            snapshot(),
            Expect {
                host_features: CpuFeatures {
                    leaf1_ecx: 0b0011,
                    ..CpuFeatures::default()
                },
                ..expect()
            },
        );
        let text = e.to_string();
        assert!(
            text.contains("CPUID.1:ECX bit 3") && text.contains("CPUID.7.0:EBX bit 5"),
            "{text}"
        );
    }
}
