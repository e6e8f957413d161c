//! The L1 initramfs: a tree of files (from the host, or generated), keyed by the sha256 of every
//! path, mode and content, and written once per key to `<cache>/lab/initramfs-<key>.cpio`
//! (built into a temporary file under a flock, then renamed into place).

use crate::cpio::CpioWriter;
use crate::lock::CacheLock;
use crate::progress::Progress;
use crate::tools::find_on_path;
use crate::LabError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Changes whenever the archive layout changes, so that old entries are not reused.
const FORMAT_VERSION: &str = "sandbox-lab initramfs 1";
/// Initramfs archives beyond the newest few, unused for this long, are removed when a new one is
/// built.
const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// How many of the most recently used archives are always kept.
const KEEP_NEWEST: usize = 3;

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { source: Source, mode: u32 },
    Symlink(String),
}

#[derive(Debug, Clone)]
enum Source {
    Host(PathBuf),
    /// A host program whose debug sections are dropped on the way in (`strip --strip-debug`):
    /// a debug build of `sandbox` shrinks from ~60 MB to ~12 MB, which L1 unpacks faster.
    HostStripped(PathBuf),
    Bytes(Vec<u8>),
}

/// The files of an initramfs, by path inside L1 (no leading slash).
#[derive(Debug, Clone, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

fn rel(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    fn parents(&mut self, path: &str) {
        let mut cur = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            self.entries.entry(cur.clone()).or_insert(Entry::Dir);
        }
    }

    /// An empty directory.
    pub fn dir(&mut self, path: &str) {
        let path = rel(path);
        self.parents(&path);
        self.entries.insert(path, Entry::Dir);
    }

    /// A file with the given content.
    pub fn bytes(&mut self, path: &str, mode: u32, content: impl Into<Vec<u8>>) {
        let path = rel(path);
        self.parents(&path);
        self.entries.insert(
            path,
            Entry::File {
                source: Source::Bytes(content.into()),
                mode,
            },
        );
    }

    /// A copy of a host file (symlinks followed).
    pub fn host_file(&mut self, path: &str, mode: u32, host: &Path) {
        let path = rel(path);
        self.parents(&path);
        self.entries.insert(
            path,
            Entry::File {
                source: Source::Host(host.to_path_buf()),
                mode,
            },
        );
    }

    /// A copy of a host program without its debug sections (when `strip` is installed).
    pub fn host_program_stripped(&mut self, path: &str, host: &Path) {
        let path = rel(path);
        self.parents(&path);
        let source = Source::HostStripped(host.to_path_buf());
        self.entries.insert(path, Entry::File { source, mode: 0o755 });
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = rel(path);
        self.parents(&path);
        self.entries.insert(path, Entry::Symlink(target.to_string()));
    }

    /// Whether `path` is in the tree.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&rel(path))
    }

    /// A host program at `path` in L1, plus the shared libraries `ldd` lists for it (at the
    /// paths `ldd` names). `remedy` says how to get a program whose libraries cannot be listed.
    pub fn program(&mut self, path: &str, host: &Path, remedy: &str) -> Result<(), LabError> {
        self.host_file(path, 0o755, host);
        for lib in shared_libraries(host, remedy)? {
            let at = lib.to_string_lossy().into_owned();
            if !self.contains(&at) {
                self.host_file(&at, 0o755, &lib);
            }
        }
        Ok(())
    }

    /// The cache key: sha256 over every path, kind, mode and content, in path order.
    pub fn key(&self) -> Result<String, LabError> {
        let mut h = Sha256::new();
        h.update(FORMAT_VERSION.as_bytes());
        for (path, entry) in &self.entries {
            h.update(path.as_bytes());
            h.update([0]);
            match entry {
                Entry::Dir => h.update(b"d"),
                Entry::Symlink(t) => {
                    h.update(b"l");
                    h.update(t.as_bytes());
                }
                Entry::File { source, mode } => {
                    h.update(format!("f{mode:o}").as_bytes());
                    match source {
                        Source::Bytes(b) => {
                            h.update(file_digest(&mut &b[..]).map_err(|e| LabError::io("hash", path, e))?)
                        }
                        Source::Host(p) | Source::HostStripped(p) => {
                            if matches!(source, Source::HostStripped(_)) {
                                h.update(b"strip-debug");
                            }
                            let mut f = File::open(p).map_err(|e| LabError::io("open", p, e))?;
                            h.update(file_digest(&mut f).map_err(|e| LabError::io("read", p, e))?);
                        }
                    }
                }
            }
            h.update([0]);
        }
        Ok(hex(&h.finalize()[..12]))
    }

    /// The archive for this tree in `lab_dir`, built first unless an identical one exists.
    pub fn build(&self, lab_dir: &Path, progress: &Progress) -> Result<PathBuf, LabError> {
        let step = progress.step("hashing the L1 initramfs inputs");
        let key = self.key()?;
        step.done(&format!("key {key}"));
        let target = lab_dir.join(format!("initramfs-{key}.cpio"));
        if target.is_file() {
            touch(&target);
            return Ok(target);
        }
        fs::create_dir_all(lab_dir).map_err(|e| LabError::io("create", lab_dir, e))?;
        let _lock = CacheLock::acquire(&lab_dir.join("initramfs.lock"))?;
        if target.is_file() {
            return Ok(target);
        }
        let step = progress.step("building the L1 initramfs");
        let tmp = tempfile::Builder::new()
            .prefix(".initramfs-")
            .suffix(".tmp")
            .tempfile_in(lab_dir)
            .map_err(|e| LabError::io("create a temporary file in", lab_dir, e))?;
        let scratch = tempfile::Builder::new()
            .prefix(".strip-")
            .tempdir_in(lab_dir)
            .map_err(|e| LabError::io("create a temporary directory in", lab_dir, e))?;
        let mut w = CpioWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
        self.write(&mut w, scratch.path())
            .map_err(|e| LabError::io("write", tmp.path(), e))?;
        w.finish().map_err(|e| LabError::io("write", tmp.path(), e))?;
        let size = tmp.as_file().metadata().map(|m| m.len()).unwrap_or(0);
        tmp.persist(&target)
            .map_err(|e| LabError::io("rename into place", &target, e.error))?;
        step.done(&format!(
            "{} ({:.1} MiB)",
            target.display(),
            size as f64 / 1048576.0
        ));
        remove_stale(lab_dir, &target);
        Ok(target)
    }

    fn write<W: io::Write>(&self, w: &mut CpioWriter<W>, scratch: &Path) -> io::Result<()> {
        let strip = find_on_path("strip");
        for (n, (path, entry)) in self.entries.iter().enumerate() {
            match entry {
                Entry::Dir => w.dir(path, 0o755)?,
                Entry::Symlink(t) => w.symlink(path, t)?,
                Entry::File {
                    source: Source::Bytes(b),
                    mode,
                } => w.file(path, *mode, b.len() as u64, &mut &b[..])?,
                Entry::File {
                    source: Source::HostStripped(p),
                    mode,
                } => {
                    let stripped = scratch.join(n.to_string());
                    let done = strip.as_ref().is_some_and(|strip| {
                        Command::new(strip)
                            .arg("--strip-debug")
                            .arg("-o")
                            .arg(&stripped)
                            .arg(p)
                            // A program that is not an ELF file (a script) goes in as it is.
                            .stderr(std::process::Stdio::null())
                            .status()
                            .is_ok_and(|s| s.success())
                    });
                    let from = if done { stripped.as_path() } else { p.as_path() };
                    let mut f = File::open(from)
                        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", from.display())))?;
                    let size = f.metadata()?.len();
                    w.file(path, *mode, size, &mut f)?;
                    let _ = fs::remove_file(&stripped);
                }
                Entry::File {
                    source: Source::Host(p),
                    mode,
                } => {
                    let mut f = File::open(p)
                        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                    let size = f.metadata()?.len();
                    w.file(path, *mode, size, &mut f)?;
                }
            }
        }
        Ok(())
    }
}

fn file_digest(r: &mut dyn Read) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Marks an archive as recently used, so that [`remove_stale`] keeps it.
fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// What a sweep of the lab cache removed and kept: each archive with its size in bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub removed: Vec<(PathBuf, u64)>,
    pub kept: Vec<(PathBuf, u64)>,
}

/// Removes initramfs archives that are neither among the [`KEEP_NEWEST`] most recently used nor
/// used within [`STALE_AFTER`] (each rebuild of `sandbox` makes a new one). A run still booting
/// from a removed archive is unaffected: QEMU has it open.
fn remove_stale(lab_dir: &Path, keep: &Path) {
    sweep(lab_dir, Some(STALE_AFTER), Some(keep));
}

/// Sweeps the initramfs archives in `lab_dir`: the [`KEEP_NEWEST`] most recently used stay, and
/// `keep`, and with `recent` every archive used within it (`sandbox gc --caches` passes none).
pub fn sweep(lab_dir: &Path, recent: Option<Duration>, keep: Option<&Path>) -> Sweep {
    let mut sweep = Sweep::default();
    let Ok(entries) = fs::read_dir(lab_dir) else {
        return sweep;
    };
    let mut archives: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("initramfs-") && name.ends_with(".cpio")
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    archives.sort_by_key(|a| std::cmp::Reverse(a.0));
    for (i, (used, size, path)) in archives.into_iter().enumerate() {
        let fresh = recent.is_some_and(|r| used.elapsed().is_ok_and(|age| age <= r));
        if i < KEEP_NEWEST || fresh || keep == Some(path.as_path()) || fs::remove_file(&path).is_err() {
            sweep.kept.push((path, size));
        } else {
            sweep.removed.push((path, size));
        }
    }
    sweep
}

/// The shared libraries of a host program (empty for a static one), as `ldd` lists them.
pub fn shared_libraries(program: &Path, remedy: &str) -> Result<Vec<PathBuf>, LabError> {
    let err = |detail: String| LabError::Libraries {
        path: program.to_path_buf(),
        detail,
        remedy: remedy.to_string(),
    };
    let ldd =
        find_on_path("ldd").ok_or_else(|| err("ldd not found: run `apt-get install libc-bin`".into()))?;
    let out = Command::new(ldd)
        .arg(program)
        .output()
        .map_err(|e| err(e.to_string()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(err(text.trim().to_string()));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("not found") {
            return Err(err(line.to_string()));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_follows_content_not_names_of_sources() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"one").unwrap();
        let mut t = Tree::new();
        t.host_file("/bin/x", 0o755, &a);
        t.bytes("/init", 0o755, "#!/bin/sh\n");
        let k1 = t.key().unwrap();
        assert_eq!(t.key().unwrap(), k1);
        fs::write(&a, b"two").unwrap();
        let k2 = t.key().unwrap();
        assert_ne!(k1, k2);
        t.bytes("/init", 0o700, "#!/bin/sh\n");
        assert_ne!(t.key().unwrap(), k2);
    }

    #[test]
    fn build_is_cached_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tree::new();
        t.bytes("/etc/hello", 0o644, "hi\n");
        let p = Progress::new(false);
        let first = t.build(dir.path(), &p).unwrap();
        let mtime = fs::metadata(&first).unwrap().len();
        assert_eq!(t.build(dir.path(), &p).unwrap(), first);
        assert_eq!(fs::metadata(&first).unwrap().len(), mtime);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn stale_archives_go_but_the_newest_and_the_current_stay() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut paths = Vec::new();
        for (i, age_min) in [60u64, 50, 40, 30, 20, 1].iter().enumerate() {
            let p = dir.path().join(format!("initramfs-{i}.cpio"));
            let f = File::create(&p).unwrap();
            f.set_modified(now - Duration::from_secs(age_min * 60)).unwrap();
            paths.push(p);
        }
        let other = dir.path().join("kernel-x");
        fs::create_dir(&other).unwrap();
        remove_stale(dir.path(), &paths[0]);
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        // The current one (0) stays; 1 and 2 are stale and beyond the newest three (3, 4, 5).
        assert_eq!(left, [true, false, false, true, true, true]);
        assert!(other.exists());
    }

    #[test]
    fn ldd_lists_libraries_of_a_dynamic_program() {
        let libs = shared_libraries(Path::new("/bin/ls"), "").unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }
}
