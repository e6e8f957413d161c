//! The kernel source: the tarball's identity (its sha256, remembered by path, size and mtime so
//! the 130 MiB file is hashed once) and its unpacked tree, shared by every kernel variant under
//! `<cache>/src-<srckey>/` and created by rename only once fully unpacked.

use crate::progress::Progress;
use crate::{lock, KernelError};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Returns the hex sha256 of `tarball`, from `<cache>/source-ids/` when path, size and mtime match.
pub fn tarball_sha256(tarball: &Path, cache: &Path) -> Result<String, KernelError> {
    let meta = fs::metadata(tarball).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KernelError::SourceMissing(tarball.to_path_buf()),
        _ => KernelError::io("cannot stat", tarball, e),
    })?;
    let stamp = format!("{} {} {}", meta.size(), meta.mtime(), meta.mtime_nsec());
    let ids = cache.join("source-ids");
    let id_file = ids.join(&hex(&Sha256::digest(tarball.as_os_str().as_encoded_bytes()))[..16]);
    if let Ok(text) = fs::read_to_string(&id_file) {
        if let Some((recorded, sha)) = text.trim().rsplit_once(' ') {
            if recorded == stamp && sha.len() == 64 {
                return Ok(sha.to_string());
            }
        }
    }
    let sha = hash_file(tarball)?;
    fs::create_dir_all(&ids).map_err(|e| KernelError::io("cannot create", &ids, e))?;
    let tmp = tempfile::NamedTempFile::new_in(&ids)
        .map_err(|e| KernelError::io("cannot create a file in", &ids, e))?;
    fs::write(tmp.path(), format!("{stamp} {sha}\n"))
        .map_err(|e| KernelError::io("cannot write", tmp.path(), e))?;
    tmp.persist(&id_file)
        .map_err(|e| KernelError::io("cannot write", &id_file, e.error))?;
    Ok(sha)
}

fn hash_file(path: &Path) -> Result<String, KernelError> {
    let mut file = fs::File::open(path).map_err(|e| KernelError::io("cannot open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| KernelError::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Returns the unpacked source tree for `tarball` (identified by `sha`), unpacking it first if needed.
pub fn ensure_unpacked(
    tarball: &Path,
    sha: &str,
    cache: &Path,
    progress: &mut Progress,
) -> Result<PathBuf, KernelError> {
    let dir = cache.join(format!("src-{}", &sha[..16]));
    if dir.join("Makefile").is_file() {
        return Ok(dir);
    }
    let _lock = lock::lock(&cache.join(format!("src-{}.lock", &sha[..16])))?;
    if dir.join("Makefile").is_file() {
        return Ok(dir);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(cache)
        .map_err(|e| KernelError::io("cannot create a directory in", cache, e))?;
    progress.phase("unpacking source");
    let mut child = Command::new("tar")
        .arg("-xJf")
        .arg(tarball)
        .arg("-C")
        .arg(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KernelError::io("cannot run tar on", tarball, e))?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        // Drained on a thread so that a chatty tar cannot block on a full pipe.
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        });
        while child
            .try_wait()
            .map_err(|e| KernelError::io("cannot wait for tar on", tarball, e))?
            .is_none()
        {
            progress.update("unpacking source", None);
            std::thread::sleep(crate::progress::TICK);
        }
        stderr = reader.join().unwrap_or_default();
    }
    let status = child
        .wait()
        .map_err(|e| KernelError::io("cannot wait for tar on", tarball, e))?;
    if !status.success() {
        return Err(KernelError::Unpack {
            tarball: tarball.to_path_buf(),
            detail: format!("tar {status}: {}", stderr.trim()),
        });
    }
    progress.done("unpacking source", None);
    let root = source_root(tmp.path()).ok_or_else(|| KernelError::Unpack {
        tarball: tarball.to_path_buf(),
        detail: "no kernel Makefile at its top or in its single top-level directory".to_string(),
    })?;
    fs::rename(&root, &dir).map_err(|e| KernelError::io("cannot move the unpacked source to", &dir, e))?;
    Ok(dir)
}

/// The directory of an unpacked tarball that holds the kernel's top Makefile.
fn source_root(unpacked: &Path) -> Option<PathBuf> {
    let entries: Vec<PathBuf> = fs::read_dir(unpacked)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    match entries.as_slice() {
        [only] if only.join("Makefile").is_file() && only.join("Kconfig").is_file() => Some(only.clone()),
        _ => None,
    }
}
