//! The launcher's side of `sandbox run -t`: its own terminal put in raw mode (and restored on
//! every ending), and a relay between that terminal and the sandbox's — the master end of the
//! container's pty, or the VM's console — with window-size changes passed on.
//!
//! In raw mode the host terminal hands every key to the sandbox unchanged: Ctrl-C becomes a byte
//! the sandbox's own terminal turns into SIGINT for its foreground job, as on a real login.

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The size (rows, columns) of the terminal on `fd`, if it is one.
pub fn size_of(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// The launcher's terminal size: stdout's, else stdin's.
pub fn host_size() -> Option<(u16, u16)> {
    size_of(libc::STDOUT_FILENO).or_else(|| size_of(libc::STDIN_FILENO))
}

/// Sets the size of the terminal on `fd` (the sandbox's side: its foreground job gets SIGWINCH).
pub fn set_size(fd: RawFd, (rows, cols): (u16, u16)) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize, which `ws` is.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only queries the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The launcher's stdin in raw mode until dropped (which restores it exactly as it was).
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin in raw mode; `None` when stdin is not a terminal (nothing to restore).
    pub fn enter() -> Result<Option<RawMode>, Errno> {
        RawMode::enter_with(false)
    }

    /// Raw input, but output still turns `\n` into `\r\n`: for a launcher that prints lines of
    /// its own (progress) while the terminal is raw.
    pub fn enter_keeping_output() -> Result<Option<RawMode>, Errno> {
        RawMode::enter_with(true)
    }

    fn enter_with(keep_output: bool) -> Result<Option<RawMode>, Errno> {
        // SAFETY: descriptor 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
        if !is_terminal(stdin.as_raw_fd()) {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if keep_output {
            raw.output_flags = saved.output_flags;
        }
        termios::tcsetattr(stdin, SetArg::TCSADRAIN, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
        let _ = termios::tcsetattr(stdin, SetArg::TCSADRAIN, &self.saved);
    }
}

/// A `-t` session on the launcher's side: the relay (where the backend has one) and the raw mode
/// (with `-i`).
pub struct Session {
    pub relay: Option<Relay>,
    pub raw: Option<RawMode>,
}

impl Session {
    /// Lets the sandbox's last output through, then restores the launcher's terminal.
    pub fn finish(self) {
        if let Some(relay) = self.relay {
            relay.finish();
        }
        drop(self.raw);
    }
}

/// A console socket (`--console-socket` of the OCI runtime) of this process's own: a unix socket
/// in a private temporary directory on which the container's first process (or an exec'd one)
/// sends its terminal's master end, for this process to relay (`sandbox exec -t`).
pub struct ConsoleSocket {
    dir: tempfile::TempDir,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> std::io::Result<ConsoleSocket> {
        let dir = tempfile::Builder::new().prefix("sandbox-console-").tempdir()?;
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("console.sock"))?;
        Ok(ConsoleSocket { dir, listener })
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("console.sock")
    }

    /// Takes the master end (the sender has connected and sent it by now: call after the
    /// process was created) and starts relaying this terminal to it; raw with `keep_stdin`.
    pub fn attach(self, keep_stdin: bool) -> Result<Session, crate::CoreError> {
        let sys = |what: &'static str, errno: Errno| crate::CoreError::Terminal { what, errno };
        let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|e| sys("accepting on the console socket", io(e)))?;
        let master = sandbox_container::terminal::receive_master(&OwnedFd::from(stream))
            .map_err(|e| sys("receiving the terminal's master end", e))?;
        if let Some(size) = host_size() {
            set_size(master.as_raw_fd(), size);
        }
        let output = master
            .try_clone()
            .map_err(|e| sys("duplicating the pty master", io(e)))?;
        let resizer = master
            .try_clone()
            .map_err(|e| sys("duplicating the pty master", io(e)))?;
        let raw = if keep_stdin {
            RawMode::enter().map_err(|e| sys("putting the terminal in raw mode", e))?
        } else {
            None
        };
        let relay = relay(Ends {
            sandbox_in: master,
            sandbox_out: Some(output),
            stdin: keep_stdin,
            resize: Box::new(move |size| set_size(resizer.as_raw_fd(), size)),
        })
        .map_err(|e| sys("starting the terminal relay", e))?;
        Ok(Session {
            relay: Some(relay),
            raw,
        })
    }
}

/// The write end of the pipe SIGWINCH's handler pokes (-1: none).
static WINCH_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write is async-signal-safe; one byte from a local. A full pipe drops it (a
        // resize is already pending).
        unsafe { libc::write(fd, &byte as *const u8 as *const libc::c_void, 1) };
    }
}

/// What the relay copies between.
pub struct Ends {
    /// The sandbox's terminal: the pty master, or the VM console's input.
    pub sandbox_in: OwnedFd,
    /// Where the sandbox's output comes from (the same descriptor for a pty master), or `None`
    /// when its output reaches stdout another way (the VMM writes the console itself).
    pub sandbox_out: Option<OwnedFd>,
    /// Copy the launcher's stdin to the sandbox (`-i`).
    pub stdin: bool,
    /// Called with the new size when the launcher's terminal is resized.
    pub resize: Box<dyn Fn((u16, u16)) + Send>,
}

/// A running relay (one thread).
pub struct Relay {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Option<OwnedFd>,
    previous_winch: Option<nix::sys::signal::SigAction>,
}

/// Starts relaying. Output is copied until the sandbox's side ends (EIO or end of file: every
/// process holding its terminal has exited), input until [`Relay::finish`].
pub fn relay(ends: Ends) -> Result<Relay, Errno> {
    let (stop_read, stop_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (winch_read, winch_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    WINCH_PIPE.store(winch_write.as_raw_fd(), Ordering::SeqCst);
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_winch),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only loads an atomic and calls write, both async-signal-safe.
    let previous = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGWINCH, &action) }?;
    let thread = std::thread::Builder::new()
        .name("terminal".into())
        .spawn(move || {
            run(ends, stop_read, winch_read);
            // The pipe's write end lives as long as the thread may be poked.
            drop(winch_write);
        })
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
    Ok(Relay {
        thread: Some(thread),
        stop: Some(stop_write),
        previous_winch: Some(previous),
    })
}

impl Relay {
    /// Stops copying input and waits until the sandbox's remaining output has been written.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        WINCH_PIPE.store(-1, Ordering::SeqCst);
        if let Some(previous) = self.previous_winch.take() {
            // SAFETY: restores the handler that was there before.
            let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGWINCH, &previous) };
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Writes all of `data` to `fd` (blocking), or gives up on an error.
fn write_all(fd: BorrowedFd, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(100u16));
            }
            Err(_) => return false,
        }
    }
    true
}

/// The relay's loop: stdin → sandbox, sandbox → stdout, resizes, until stopped and drained.
fn run(ends: Ends, stop: OwnedFd, winch: OwnedFd) {
    // SAFETY: descriptors 0 and 1 stay open for the life of the process.
    let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
    let stdout = unsafe { BorrowedFd::borrow_raw(libc::STDOUT_FILENO) };
    let mut input_open = ends.stdin;
    let mut stopping = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let out = ends.sandbox_out.as_ref().map(|fd| fd.as_fd());
        if stopping && out.is_none() {
            return;
        }
        let mut fds = vec![
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            PollFd::new(winch.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(o) = out {
            fds.push(PollFd::new(o, PollFlags::POLLIN));
        }
        if input_open && !stopping {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        // Once stopped, drain what output is left, without waiting on a terminal some
        // leftover process inside may still hold open.
        let timeout = if stopping {
            PollTimeout::from(200u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) if stopping => return,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (stop_ready, winch_ready) = (ready(0), ready(1));
        let out_ready = out.is_some() && ready(2);
        let in_index = if out.is_some() { 3 } else { 2 };
        let in_ready = input_open && !stopping && ready(in_index);
        if stop_ready {
            stopping = true;
        }
        if winch_ready {
            while nix::unistd::read(winch.as_fd(), &mut buf).is_ok_and(|n| n > 0) {}
            if let Some(size) = host_size() {
                (ends.resize)(size);
            }
        }
        if out_ready {
            match nix::unistd::read(out.expect("checked"), &mut buf) {
                Ok(0) | Err(Errno::EIO) => return,
                Ok(n) => {
                    if !write_all(stdout, &buf[..n]) {
                        return;
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => return,
            }
        }
        if in_ready {
            match nix::unistd::read(stdin, &mut buf) {
                Ok(0) => {
                    input_open = false;
                    // End of input reaches the sandbox's terminal as its EOF character
                    // (what Ctrl-D on a real terminal sends).
                    if ends.sandbox_out.is_some() {
                        let _ = write_all(ends.sandbox_in.as_fd(), &[4]);
                    }
                }
                Ok(n) => {
                    if !write_all(ends.sandbox_in.as_fd(), &buf[..n]) {
                        input_open = false;
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => input_open = false,
            }
        }
    }
}
