//! Creating the container's first process, and the launcher's side of talking to it: the
//! pipes, the status records, signal forwarding, and waiting for the end.

use crate::child::{self, tag, ChildConfig};
use crate::ContainerError;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), ContainerError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::sys("creating a pipe", e))
}

/// Creates the container's first process with `flags` (new namespaces) and runs
/// [`child::main`] in it. Returns the child's pid (in the launcher's PID namespace).
///
/// The raw `clone` system call is used with fork semantics (no new stack: the child continues
/// on its copy of the caller's stack), because the PID namespace must be created with the
/// process that becomes its PID 1. Like `fork`, the child must not rely on locks that another
/// thread of the launcher might hold: call this while the launcher has a single thread (the
/// `sandbox` CLI does), and keep heavy work out of the child (the config is prepared here).
pub fn spawn(cfg: &mut ChildConfig, flags: CloneFlags) -> Result<Pid, ContainerError> {
    spawn_placed(cfg, flags, None).map(|(pid, _)| pid)
}

/// `clone3`'s argument block (`struct clone_args`, the version with `cgroup`: 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7): the child starts in the cgroup2 directory `cgroup` names.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`spawn`], with the child born in the cgroup2 directory `cgroup` (an open directory fd)
/// through `clone3(CLONE_INTO_CGROUP)` where given and the kernel has it: no later write of
/// its pid into `cgroup.procs`, which makes the kernel migrate a running task. Returns the pid
/// and whether it was placed so; a kernel without `clone3` (or refusing the cgroup) gets the
/// plain `clone`, and the caller moves the child itself.
pub fn spawn_placed(
    cfg: &mut ChildConfig,
    flags: CloneFlags,
    cgroup: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<(Pid, bool), ContainerError> {
    if let Some(dir) = cgroup {
        let args = CloneArgs {
            flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 reads `args` (valid for its size, which is passed); with no stack it
        // behaves like fork, as the plain clone below does: the child continues here on its
        // copy of this address space and never returns (child::main ends in exec or _exit).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match rc {
            0 => child::main(cfg),
            pid if pid > 0 => return Ok((Pid::from_raw(pid as i32), true)),
            // ENOSYS, E2BIG: an older kernel; others (a cgroup it refuses): the plain way, whose
            // own error is the one to report if it fails too.
            _ => {}
        }
    }
    let clone_flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: clone with a null stack behaves like fork: the child gets a copy of this address
    // space and returns 0 here; it never returns from this function (child::main ends in exec
    // or _exit). No pointer arguments are passed (parent/child tid and tls are unused).
    let rc = unsafe { libc::syscall(libc::SYS_clone, clone_flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        -1 => Err(clone_error(Errno::last(), flags)),
        0 => child::main(cfg),
        pid => Ok((Pid::from_raw(pid as i32), false)),
    }
}

fn clone_error(errno: Errno, flags: CloneFlags) -> ContainerError {
    let hint = match errno {
        Errno::EPERM if flags.contains(CloneFlags::CLONE_NEWUSER) => {
            " (this host does not let unprivileged users create user namespaces: run as root)"
        }
        Errno::EPERM => " (creating namespaces needs root)",
        Errno::ENOSPC => " (a namespace limit in /proc/sys/user/ is reached)",
        Errno::EINVAL => " (this kernel lacks one of the namespaces: PID, mount, UTS, IPC, net)",
        _ => "",
    };
    ContainerError::Child(format!(
        "creating the container process failed: {}{hint}",
        errno.desc()
    ))
}

/// What the first process reported (monotonic readings).
#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub namespaces_ns: Option<u64>,
    pub rootfs_ns: Option<u64>,
    pub created_ns: Option<u64>,
    pub exec_ns: Option<u64>,
    pub error: Option<String>,
}

/// The launcher's end of the status pipe.
pub struct StatusReader(BufReader<std::fs::File>);

impl StatusReader {
    pub fn new(status: OwnedFd) -> StatusReader {
        StatusReader(BufReader::new(std::fs::File::from(status)))
    }

    /// Reads records into `progress` until "created", an error, or the end of the pipe.
    pub fn until_created(&mut self, progress: &mut Progress) {
        self.read(progress, true);
        if progress.error.is_none() && progress.created_ns.is_none() {
            progress.error = Some("the container process ended before it was set up".into());
        }
    }

    /// Reads the remaining records (after "start") until the pipe closes: at `exec`, or when
    /// the process ends.
    pub fn until_exec(&mut self, progress: &mut Progress) {
        self.read(progress, false);
        if progress.error.is_none() && progress.exec_ns.is_none() {
            progress.error = Some("the container process ended before it started the workload".into());
        }
    }

    fn read(&mut self, progress: &mut Progress, stop_at_created: bool) {
        let mut line = String::new();
        loop {
            line.clear();
            match self.0.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = line.trim_end();
            let (t, rest) = text.split_once(' ').unwrap_or((text, ""));
            let ns = rest.trim().parse::<u64>().ok();
            match t {
                tag::NAMESPACES => progress.namespaces_ns = ns,
                tag::ROOTFS => progress.rootfs_ns = ns,
                tag::CREATED => {
                    progress.created_ns = ns;
                    if stop_at_created {
                        return;
                    }
                }
                tag::EXEC => progress.exec_ns = ns,
                tag::ERROR => {
                    progress.error = Some(rest.to_string());
                    return;
                }
                _ => {}
            }
        }
    }
}

/// Owns the child process: dropping it before it was reaped kills it and reaps it, so an early
/// return in the launcher never leaves it running.
#[derive(Debug)]
pub struct ChildProcess {
    pid: Pid,
    reaped: bool,
}

impl ChildProcess {
    pub fn new(pid: Pid) -> ChildProcess {
        ChildProcess { pid, reaped: false }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the process to end (retrying on signals); returns the shell-style status
    /// (exit code, or 128 + signal number).
    pub fn wait(&mut self) -> Result<i32, ContainerError> {
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    self.reaped = true;
                    return Ok(code);
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    self.reaped = true;
                    return Ok(128 + sig as i32);
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.reaped = true;
                    return Err(ContainerError::sys("waiting for the container", e));
                }
            }
        }
    }

    /// Gives up ownership: the process outlives this value (an OCI container, reaped by
    /// whoever runs the runtime).
    pub fn release(mut self) -> Pid {
        self.reaped = true;
        self.pid
    }

    /// Kills the process (and with it, as PID 1, its whole PID namespace) and reaps it.
    pub fn kill(&mut self) {
        if !self.reaped {
            let _ = signal::kill(self.pid, Signal::SIGKILL);
            let _ = self.wait();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pid signals are forwarded to (0: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // The container has a session of its own, so a terminal's SIGINT reaches only the
    // launcher: it is passed on like any other.
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes no pointers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the launcher to the container's first process while
/// alive; the previous handlers come back when dropped.
pub struct SignalForwarder {
    previous: Vec<(Signal, SigAction)>,
}

impl SignalForwarder {
    pub fn install(pid: Pid) -> Result<SignalForwarder, ContainerError> {
        FORWARD_TO.store(pid.as_raw(), Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::SigAction(forward),
            SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
            SigSet::empty(),
        );
        let mut previous = Vec::new();
        // What ends a foreground program (and a terminal's hang-up) reaches the workload, whose
        // init passes it on; the launcher itself ends when the workload does.
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
            // SAFETY: the handler only reads an atomic and calls kill, both async-signal-safe.
            let old = unsafe { signal::sigaction(sig, &action) }
                .map_err(|e| ContainerError::sys("installing the signal forwarder", e))?;
            previous.push((sig, old));
        }
        Ok(SignalForwarder { previous })
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        FORWARD_TO.store(0, Ordering::SeqCst);
        for (sig, old) in &self.previous {
            // SAFETY: restores the handler that was installed before ours.
            let _ = unsafe { signal::sigaction(*sig, old) };
        }
    }
}

/// Sends a line (`go ...`, `start`) to the child.
pub fn send_line(go: &OwnedFd, message: &str) -> Result<(), ContainerError> {
    let mut bytes = message.as_bytes();
    while !bytes.is_empty() {
        match nix::unistd::write(go, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(ContainerError::sys(
                    format!(
                        "talking to the container's first process (pipe {})",
                        go.as_raw_fd()
                    ),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// Reads the ready pipe in a thread; the handle yields when "ready" arrived (monotonic ns).
pub fn watch_ready(ready: OwnedFd) -> std::thread::JoinHandle<Option<u64>> {
    std::thread::spawn(move || {
        let reader = BufReader::new(std::fs::File::from(ready));
        let mut at = None;
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if line.trim() == "ready" && at.is_none() {
                at = Some(sandbox_protocol::trace::now_ns());
            }
        }
        at
    })
}
