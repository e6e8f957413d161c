//! `sandbox exec` in a VM: another process started by the guest agent ([`super::agent`]),
//! with this process's stdio relayed to it, its status returned.
//!
//! Steps: reach the agent through the VM's vsock socket, put the terminal in raw mode for `-t -i`,
//! start the process, and pump its stdio while a [`Forwarder`] passes this process's stop
//! signals (and, with a terminal, window-size changes) on to it.

use super::agent::{Agent, Controller, ExecRequest, LocalIo, VSOCK_SOCKET_NAME};
use crate::error::CoreError;
use crate::terminal;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// How long `exec` waits for the agent of a VM that is still booting.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run, and how.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub user: Option<(u32, u32)>,
    /// A pseudo-terminal in the guest, relayed to this process's terminal.
    pub terminal: bool,
    /// Copy this process's stdin to the process (else its stdin ends at once).
    pub stdin: bool,
}

/// Runs `request` in the VM whose sandbox directory is `dir`; returns the process's status
/// (127 or 126, with a line on stderr, when it cannot be started).
pub fn run(dir: &Path, request: &Request) -> Result<i32, CoreError> {
    let agent = Agent::connect(dir.join(VSOCK_SOCKET_NAME), AGENT_TIMEOUT)?;
    let raw = if request.terminal && request.stdin {
        terminal::RawMode::enter().map_err(|errno| CoreError::Terminal {
            what: "putting the terminal in raw mode",
            errno,
        })?
    } else {
        None
    };
    let wire = ExecRequest {
        argv: request.argv.clone(),
        env: request.env.clone(),
        cwd: request.cwd.clone(),
        user: request.user,
        terminal: request.terminal,
        size: request.terminal.then(terminal::host_size).flatten(),
    };
    // Blocked before any thread starts, so only the forwarder takes them.
    let forwarded = Forwarder::block(request.terminal)?;
    let session = match agent.exec(&wire) {
        Ok(session) => session,
        Err(e) => {
            drop(forwarded);
            drop(raw);
            return match e.exit_status() {
                Some(status) => {
                    eprintln!("sandbox exec: {e}");
                    Ok(status)
                }
                None => Err(e.into()),
            };
        }
    };
    let forwarder = forwarded.start(session.controller())?;
    // SAFETY: descriptors 0, 1 and 2 stay open for the life of the process.
    let (stdin, stdout, stderr) = unsafe {
        (
            BorrowedFd::borrow_raw(libc::STDIN_FILENO),
            BorrowedFd::borrow_raw(libc::STDOUT_FILENO),
            BorrowedFd::borrow_raw(libc::STDERR_FILENO),
        )
    };
    let status = session.pump(LocalIo {
        stdin: request.stdin.then_some(stdin),
        stdout,
        stderr,
    });
    forwarder.finish();
    drop(raw);
    Ok(status?)
}

/// The signals passed on to a process in the guest: what would stop this one.
const STOP_SIGNALS: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

/// This process's stop signals (and SIGWINCH with a terminal) blocked and read from a signalfd,
/// to be passed on to the guest's process. Dropping it restores the signal mask.
pub struct Forwarder {
    fd: SignalFd,
    old_mask: SigSet,
    terminal: bool,
}

/// A [`Forwarder`]'s running thread.
pub struct Forwarding {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Option<OwnedFd>,
    forwarder: Option<Forwarder>,
}

impl Forwarder {
    /// Blocks the signals (in this thread, and the threads it starts from now on).
    pub fn block(terminal: bool) -> Result<Forwarder, CoreError> {
        let mut set = SigSet::empty();
        for s in STOP_SIGNALS {
            set.add(s);
        }
        if terminal {
            set.add(Signal::SIGWINCH);
        }
        let sys = |what: &'static str| move |errno| CoreError::Terminal { what, errno };
        let mut old_mask = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old_mask))
            .map_err(sys("blocking the signals to forward"))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).map_err(sys("making a signalfd"))?;
        Ok(Forwarder {
            fd,
            old_mask,
            terminal,
        })
    }

    /// Forwards to `controller` (signals as signals, SIGWINCH as a resize) until finished.
    pub fn start(self, controller: Controller) -> Result<Forwarding, CoreError> {
        let (stop_r, stop_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| CoreError::Terminal {
                what: "making a pipe",
                errno,
            })?;
        let fd = self
            .fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| CoreError::Terminal {
                what: "duplicating the signalfd",
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        let terminal = self.terminal;
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || forward(&fd, &stop_r, &controller, terminal))
            .map_err(|e| CoreError::Terminal {
                what: "starting the signal forwarder",
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
            })?;
        Ok(Forwarding {
            thread: Some(thread),
            stop: Some(stop_w),
            forwarder: Some(self),
        })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Signals that arrived meanwhile stay pending; unblocking delivers them as before.
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old_mask), None);
    }
}

impl Forwarding {
    /// Stops forwarding and restores the signal mask.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(self.forwarder.take());
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The forwarder's loop: a signal read from `fd` goes to the process until `stop` closes.
fn forward(fd: &OwnedFd, stop: &OwnedFd, controller: &Controller, terminal: bool) {
    loop {
        if !super::agent::readable_unless_stopped(fd.as_fd(), stop.as_fd()) {
            return;
        }
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match nix::unistd::read(fd, &mut info) {
            Ok(n) if n == info.len() => {}
            Ok(_) | Err(_) => return,
        }
        // ssi_signo is the first u32 of signalfd_siginfo.
        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
        let sent = if signo == libc::SIGWINCH {
            match terminal.then(terminal::host_size).flatten() {
                Some((rows, cols)) => controller.resize(rows, cols),
                None => Ok(()),
            }
        } else {
            controller.signal(signo)
        };
        if sent.is_err() {
            // The session has ended.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_vm_socket_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Agent::connect(dir.path().join(VSOCK_SOCKET_NAME), Duration::from_millis(100))
            .map(|_| ())
            .unwrap_err();
        let text = CoreError::from(err).to_string();
        assert!(text.contains(VSOCK_SOCKET_NAME), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn the_signal_mask_is_restored_when_a_forwarder_is_dropped() {
        // In a thread of its own: the mask is per thread.
        std::thread::spawn(|| {
            let before = SigSet::thread_get_mask().unwrap();
            let f = Forwarder::block(true).unwrap();
            assert!(SigSet::thread_get_mask().unwrap().contains(Signal::SIGWINCH));
            drop(f);
            assert_eq!(
                SigSet::thread_get_mask().unwrap().contains(Signal::SIGWINCH),
                before.contains(Signal::SIGWINCH)
            );
        })
        .join()
        .unwrap();
    }
}
