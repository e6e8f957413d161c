//! `disk`: sequential write (+fsync) and read throughput, and 4 KiB random read/write IOPS, on a
//! temporary file in a given directory. Reads and random writes bypass the page cache with
//! O_DIRECT where the filesystem allows it (`"direct"` says whether it did). The file is removed
//! afterwards, also on failure.

use super::args::{round3, Flags};
use super::WorkloadError;
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const BLOCK: usize = 4096;
/// Longest time each random phase runs.
const RANDOM_BUDGET: Duration = Duration::from_secs(1);

/// The temporary file; removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A zero-initialised buffer whose usable part starts on a 4096-byte boundary (O_DIRECT).
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + BLOCK];
        let start = storage.as_ptr().align_offset(BLOCK);
        AlignedBuf { storage, start, len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// A small xorshift generator: reproducible offsets and file content without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn failed(what: &str, path: &Path, e: io::Error) -> WorkloadError {
    WorkloadError::Failed(format!("{what} {}: {e}", path.display()))
}

/// Opens `path` with O_DIRECT when the filesystem accepts it, else buffered.
fn open_maybe_direct(path: &Path, write: bool) -> Result<(File, bool), WorkloadError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(write);
    let direct = opts.clone().custom_flags(libc::O_DIRECT).open(path);
    match direct {
        Ok(f) => Ok((f, true)),
        Err(_) => opts
            .open(path)
            .map(|f| (f, false))
            .map_err(|e| failed("cannot open", path, e)),
    }
}

/// Whether an I/O error means "O_DIRECT is not possible here" (some filesystems accept the
/// flag at open and refuse the first read).
fn direct_refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

fn rate(mib: f64, seconds: f64) -> Value {
    json!({
        "bytes": (mib * MIB as f64) as u64,
        "seconds": round3(seconds),
        "mib_per_second": round3(mib / seconds.max(1e-9)),
    })
}

fn iops(ops: u64, seconds: f64, direct: bool) -> Value {
    json!({
        "ops": ops,
        "block_bytes": BLOCK,
        "seconds": round3(seconds),
        "iops": round3(ops as f64 / seconds.max(1e-9)),
        "direct": direct,
    })
}

/// Sequential read of the whole file in 1 MiB blocks; returns (seconds, direct).
fn sequential_read(path: &Path, mib: u64, buf: &mut AlignedBuf) -> Result<(f64, bool), WorkloadError> {
    let (mut file, mut direct) = open_maybe_direct(path, false)?;
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        match file.read(buf.bytes()) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if direct && total == 0 && direct_refused(&e) => {
                file = File::open(path).map_err(|e| failed("cannot open", path, e))?;
                direct = false;
            }
            Err(e) => return Err(failed("cannot read", path, e)),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if total != mib * MIB as u64 {
        return Err(WorkloadError::Failed(format!(
            "read {total} bytes back from {}, wrote {}: the file changed under the test",
            path.display(),
            mib * MIB as u64
        )));
    }
    Ok((seconds, direct))
}

/// 4 KiB operations at random aligned offsets until `max_ops` or [`RANDOM_BUDGET`]; returns
/// (ops, seconds, direct).
fn random_io(
    path: &Path,
    blocks: u64,
    write: bool,
    rng: &mut Rng,
) -> Result<(u64, f64, bool), WorkloadError> {
    let (mut file, mut direct) = open_maybe_direct(path, write)?;
    let mut buf = AlignedBuf::new(BLOCK);
    buf.bytes().fill(0xa5);
    let start = Instant::now();
    let mut ops = 0u64;
    while ops < blocks && start.elapsed() < RANDOM_BUDGET {
        let offset = (rng.next() % blocks) * BLOCK as u64;
        let result = if write {
            file.write_all_at(buf.bytes(), offset)
        } else {
            file.read_exact_at(buf.bytes(), offset)
        };
        match result {
            Ok(()) => ops += 1,
            Err(e) if direct && ops == 0 && direct_refused(&e) => {
                file = OpenOptions::new()
                    .read(true)
                    .write(write)
                    .open(path)
                    .map_err(|e| failed("cannot open", path, e))?;
                direct = false;
            }
            Err(e) => {
                return Err(failed(
                    if write { "cannot write" } else { "cannot read" },
                    path,
                    e,
                ))
            }
        }
    }
    if write {
        file.sync_data()
            .map_err(|e| failed("cannot fdatasync", path, e))?;
    }
    Ok((ops, start.elapsed().as_secs_f64(), direct))
}

/// Runs `disk --path DIR [--mib N]`.
pub fn run(flags: &Flags) -> Result<Value, WorkloadError> {
    let dir = PathBuf::from(flags.required("path")?);
    let mib = flags.positive("mib", Some(64))?;
    if mib > 1 << 20 {
        return Err(flags.bad("mib", &mib.to_string(), "at most 1048576 (1 TiB)"));
    }
    if !dir.is_dir() {
        return Err(flags.bad("path", &dir.display().to_string(), "an existing directory"));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = dir.join(format!(".sandbox-guest-disk-{}-{nanos}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| failed("cannot create the test file", &path, e))?;
    let guard = TempFile(path.clone());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(nanos));
    let mut buf = AlignedBuf::new(MIB);
    for chunk in buf.bytes().chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }

    eprintln!("sandbox-guest disk: writing {mib} MiB to {}", dir.display());
    let start = Instant::now();
    for _ in 0..mib {
        file.write_all(buf.bytes())
            .map_err(|e| failed("cannot write", &path, e))?;
    }
    file.sync_all().map_err(|e| failed("cannot fsync", &path, e))?;
    let write_s = start.elapsed().as_secs_f64();
    // Ask the kernel to forget the cached pages, so a buffered read fallback reads the device.
    let _ = nix::fcntl::posix_fadvise(&file, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    drop(file);

    eprintln!("sandbox-guest disk: reading it back, then 4 KiB random reads and writes");
    let (read_s, read_direct) = sequential_read(&path, mib, &mut buf)?;
    let blocks = mib * (MIB / BLOCK) as u64;
    let (rr_ops, rr_s, rr_direct) = random_io(&path, blocks, false, &mut rng)?;
    let (rw_ops, rw_s, rw_direct) = random_io(&path, blocks, true, &mut rng)?;
    drop(guard);

    let mut seq_write = rate(mib as f64, write_s);
    seq_write["fsync"] = true.into();
    let mut seq_read = rate(mib as f64, read_s);
    seq_read["direct"] = read_direct.into();
    Ok(json!({
        "workload": "disk",
        "path": dir.display().to_string(),
        "mib": mib,
        "sequential_write": seq_write,
        "sequential_read": seq_read,
        "random_read_4k": iops(rr_ops, rr_s, rr_direct),
        "random_write_4k": iops(rw_ops, rw_s, rw_direct),
    }))
}
