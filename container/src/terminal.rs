//! The container's terminal (OCI `process.terminal`): a pseudo-terminal from the container's own
//! devpts instance, whose master end goes to whoever asked for it and whose slave end becomes
//! the workload's stdin, stdout, stderr and controlling terminal.
//!
//! The master is handed over a unix socket (`--console-socket`, the protocol podman's conmon
//! and containerd's shim speak): one `sendmsg` carrying the name `/dev/ptmx` and one
//! `SCM_RIGHTS` descriptor. The socket is connected by the launcher, before the first process
//! exists, so a first process in a user namespace needs no access to the socket's directory.
//! For `sandbox run -t` the launcher keeps the other end itself and relays its own terminal.

use crate::sys::{ctx, io_step, Step, StepError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connects to the console socket at `path` (in the launcher).
pub fn connect(path: &Path) -> Result<OwnedFd, String> {
    UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|e| format!("cannot connect to the console socket {}: {e}", path.display()))
}

/// A pty pair, opened inside the container's new root.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// A path reaching the slave (`/proc/self/fd/N` of [`Pty::slave`]), the source of the
    /// `/dev/console` bind mount.
    pub slave_path: std::path::PathBuf,
}

/// `TIOCGPTPEER` (`_IO('T', 0x41)`): opens the slave of a master without a path lookup.
const TIOCGPTPEER: libc::c_ulong = 0x5441;

/// Opens a pty from the devpts instance mounted at `/dev/pts` inside `root` (found without
/// following any symlink out of the root).
pub fn open(root: &Path, size: Option<(u16, u16)>) -> Result<Pty, StepError> {
    let ptmx = crate::secure_path::resolve(root, "/dev/pts/ptmx", crate::secure_path::Leaf::Existing)?;
    let master = ctx(
        nix::fcntl::open(
            &ptmx.path(),
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
        || format!("opening {} (is /dev/pts a devpts mount?)", ptmx.host().display()),
    )?;
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int, which points at a live local.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } < 0 {
        return Err(StepError {
            what: "unlocking the pty".into(),
            errno: Errno::last(),
        });
    }
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            TIOCGPTPEER as _,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(StepError {
            what: "opening the pty's slave end".into(),
            errno: Errno::last(),
        });
    }
    // SAFETY: the kernel just returned this descriptor.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some((rows, cols)) = size {
        resize(slave.as_raw_fd(), rows, cols);
    }
    Ok(Pty {
        master,
        slave_path: std::path::PathBuf::from(format!("/proc/self/fd/{}", slave.as_raw_fd())),
        slave,
    })
}

/// Sets a terminal's window size.
pub fn resize(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize, which `ws` is.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// Sends `master` over the connected console socket `socket`, as runc does.
pub fn send_master(socket: RawFd, master: &OwnedFd) -> Step {
    let name = b"/dev/ptmx";
    let iov = [std::io::IoSlice::new(name)];
    let fds = [master.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    ctx(
        nix::sys::socket::sendmsg::<()>(socket, &iov, &cmsg, nix::sys::socket::MsgFlags::empty(), None)
            .map(drop),
        || "sending the pty to the console socket".into(),
    )
}

/// Receives a terminal's master end sent by [`send_master`] on `socket`.
pub fn receive_master(socket: &OwnedFd) -> Result<OwnedFd, Errno> {
    let mut name = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = loop {
        match nix::sys::socket::recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    for cmsg in msg.cmsgs()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                for &extra in &fds[1..] {
                    // SAFETY: closes descriptors the kernel just gave this process.
                    unsafe { libc::close(extra) };
                }
                // SAFETY: the kernel just installed this descriptor in this process.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(Errno::ENODATA)
}

/// Makes `slave` this process's controlling terminal and its stdin, stdout and stderr (the
/// process must lead a session of its own: see `setsid`).
pub fn become_stdio(slave: &OwnedFd) -> Step {
    // SAFETY: TIOCSCTTY takes an int by value (0: do not steal).
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(StepError {
            what: "making the pty the controlling terminal".into(),
            errno: Errno::last(),
        });
    }
    for fd in 0..3 {
        // SAFETY: dup2 onto 0-2 replaces this process's stdio; both descriptors are valid.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(io_step(
                "putting the pty on stdio",
                &std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}
