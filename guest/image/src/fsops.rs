//! The syscall boundary: the few file-system calls std does not offer (mknod, utimensat without
//! following symlinks, extended attributes, flock). Everything else uses std.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The overlayfs xattr marking a directory opaque (hides the same directory in lower layers).
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// Creates a device node, FIFO or (with `S_IFCHR` and device 0/0) an overlayfs whiteout.
/// `mode` carries the file type bits (`S_IFCHR`, `S_IFBLK`, `S_IFIFO`) and the permissions.
pub(crate) fn mknod(path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; mknod only reads it.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets atime and mtime of `path` (not following a symlink) to `secs`.`nsecs`.
pub(crate) fn set_mtime_nofollow(path: &Path, secs: i64, nsecs: i64) -> io::Result<()> {
    let c = cpath(path)?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsecs as _,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid C string and `times` a two-element array, both alive for the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets an extended attribute on `path` itself (not a symlink's target).
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let n = cstr(name)?;
    // SAFETY: `c` and `n` are valid C strings; `value` is a live slice whose length is passed.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an extended attribute of `path` itself (however long); `None` when it is not set.
pub(crate) fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c = cpath(path)?;
    let n = cstr(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `c` and `n` are valid C strings; `buf` is a live buffer whose length is passed.
        let rc = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) => {
                // SAFETY: as above; a null buffer of length 0 asks only for the value's size.
                let size = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
                if size < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(size as usize + 1, 0);
            }
            _ => return Err(err),
        }
    }
}

/// The names of every extended attribute of `path` itself (not a symlink's target).
pub(crate) fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    let c = cpath(path)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `c` is a valid C string; `buf` is a live buffer whose length is passed.
        let rc = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) => {
                // SAFETY: as above; a null buffer of length 0 asks only for the list's size.
                let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
                if size < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(size as usize + 1, 0);
            }
            _ => return Err(err),
        }
    }
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// Whether `path` is an overlayfs whiteout: a character device with device number 0/0.
pub(crate) fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Which kind of `flock` to take.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LockKind {
    Shared,
    Exclusive,
}

/// Blocks until `file` holds the lock; it is released when the file is closed.
pub(crate) fn flock(file: &File, kind: LockKind) -> io::Result<()> {
    let op = match kind {
        LockKind::Shared => libc::LOCK_SH,
        LockKind::Exclusive => libc::LOCK_EX,
    };
    loop {
        // SAFETY: the fd belongs to `file`, which is open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Takes the lock if it is free now: `false` when someone else holds it.
pub(crate) fn try_flock(file: &File, kind: LockKind) -> io::Result<bool> {
    let op = match kind {
        LockKind::Shared => libc::LOCK_SH,
        LockKind::Exclusive => libc::LOCK_EX,
    } | libc::LOCK_NB;
    loop {
        // SAFETY: the fd belongs to `file`, which is open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(false),
            _ => return Err(err),
        }
    }
}
