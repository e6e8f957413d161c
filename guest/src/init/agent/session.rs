//! An `exec` or `run` session: the process started with its stdio on pipes (or a
//! pseudo-terminal), and the frames that stream between those and the connection until the
//! process's status has been sent.
//!
//! Threads of one session (see the module doc of [`super`] for why threads):
//! - the connection's thread: starts the process, waits for it, waits for the output pumps,
//!   sends `{"exit":N}`, and waits (a little) for the host to close;
//! - one pump per output (stdout and stderr, or the terminal): reads, sends frames;
//! - the host reader: `STDIN`/`STDIN_EOF` to the stdin feeder (a bounded channel), `signal`
//!   and `resize` at once;
//! - the stdin feeder: writes to the process's stdin, never blocking past the process's end.
//!
//! Output after the process's end: the pumps read on until the end of file (the usual case:
//! nothing else holds the pipe), or until the pipe has been quiet for [`QUIET`], or for at most
//! [`DRAIN_AFTER_EXIT`] (a background process it left holding the pipe).

use super::{check_signal, read_limited, refuse, thread, Agent};
use crate::init::exec::{self, ChildIo, Prepared};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::Pid;
use sandbox_protocol::agent::{
    read_frame, write_frame, ErrorReply, ExecRequest, ExitReply, Frame, FrameKind, OkReply, Request,
    SESSION_OPS,
};
use std::ffi::CString;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the output pumps wait for more once the process has ended and its pipe is quiet.
pub const QUIET: Duration = Duration::from_millis(100);
/// The longest the output pumps read on after the process has ended.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long the guest waits for the host to close after sending the status.
pub const LINGER: Duration = Duration::from_secs(2);
/// Bytes read from an output per frame.
const CHUNK: usize = 64 * 1024;
/// Stdin frames held for a process that is not reading (each at most 1 MiB).
const STDIN_QUEUE: usize = 4;

/// What a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    /// The workload (`run`).
    Run,
}

/// `exec`: another process, with the workload's environment, directory and user unless the
/// request sets them.
pub(super) fn exec(agent: &Agent, conn: UnixStream, request: ExecRequest) {
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return refuse(&conn, "exec needs a command: argv is empty");
    }
    let config = agent.config();
    let mut env = config.env.clone();
    exec::overlay(&mut env, request.env);
    let mut prepared = match exec::prepare_command(
        &request.argv,
        &env,
        request.cwd.as_deref().or(config.workdir.as_deref()),
        request.user.or(config.user),
    ) {
        Ok(prepared) => prepared,
        Err(e) => return refuse(&conn, e.to_string()),
    };
    // Beside the workload, not in namespaces of its own (an OCI exec).
    if let Some(pid) = agent.children().workload_pid() {
        if let Err(e) = prepared.join_namespaces_of(pid) {
            return refuse(&conn, e.to_string());
        }
    }
    start(agent, conn, &prepared, request.terminal, request.size, Kind::Exec);
}

/// `run`: the workload of a plan started `on_request`, once.
pub(super) fn run(agent: &Agent, conn: UnixStream) {
    let Some(workload) = agent.config().workload.clone() else {
        return refuse(
            &conn,
            "this sandbox's workload starts at boot (plan start: boot): run is only for a plan \
             started on_request",
        );
    };
    if agent.children().claim_workload().is_err() {
        return refuse(&conn, "the workload was already started: run starts it once");
    }
    start(
        agent,
        conn,
        &workload.prepared,
        workload.terminal,
        workload.size,
        Kind::Run,
    );
}

/// The process's ends of its stdio, held until the fork.
enum ChildEnds {
    Pipes([OwnedFd; 3]),
    Pty(CString),
}

/// The agent's ends.
enum AgentEnds {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Pty(Arc<OwnedFd>),
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn set_size(master: BorrowedFd<'_>, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize, which `ws` is (on a master it sizes the slave,
    // whose foreground group gets SIGWINCH).
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Pipes, or a pseudo-terminal of `size` (every descriptor close-on-exec: another thread's
/// fork must not keep an end open; the slave is opened by the child alone, so the master
/// reads the end of file when the process and its children are gone).
fn open_stdio(terminal: bool, size: Option<(u16, u16)>) -> io::Result<(AgentEnds, ChildEnds)> {
    if !terminal {
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        // The stdin feeder must never block past the process's end.
        set_nonblocking(stdin_w.as_fd())?;
        return Ok((
            AgentEnds::Pipes {
                stdin: stdin_w,
                stdout: stdout_r,
                stderr: stderr_r,
            },
            ChildEnds::Pipes([stdin_r, stdout_w, stderr_w]),
        ));
    }
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let slave = nix::pty::ptsname_r(&master)?;
    let master = OwnedFd::from(master);
    set_nonblocking(master.as_fd())?;
    if let Some((rows, cols)) = size {
        set_size(master.as_fd(), rows, cols);
    }
    let slave = CString::new(slave).map_err(|_| io::Error::other("the pty's name has a NUL byte"))?;
    Ok((AgentEnds::Pty(Arc::new(master)), ChildEnds::Pty(slave)))
}

/// Starts the process and, if it started, streams its session.
fn start(
    agent: &Agent,
    conn: UnixStream,
    prepared: &Prepared,
    terminal: bool,
    size: Option<(u16, u16)>,
    kind: Kind,
) {
    // Counted from here: init waits for a run's answer, even a failure, before the VM ends.
    let _session = agent.session_started();
    let give_back = || {
        if kind == Kind::Run {
            agent.children().unclaim_workload();
        }
    };
    let what = if terminal { "terminal" } else { "pipes" };
    let (ends, child_ends) = match open_stdio(terminal, size) {
        Ok(pair) => pair,
        Err(e) => {
            give_back();
            return refuse(&conn, format!("cannot make the process's {what}: {e}"));
        }
    };
    let (report_r, report_w) = match pipe() {
        Ok(pair) => pair,
        Err(e) => {
            give_back();
            return refuse(&conn, format!("cannot make a pipe: {e}"));
        }
    };
    let io = match &child_ends {
        ChildEnds::Pipes(fds) => ChildIo::Fds(fds.each_ref().map(AsRawFd::as_raw_fd)),
        ChildEnds::Pty(slave) => ChildIo::Pty(slave),
    };
    let fork = || exec::spawn_with(prepared, io, Some(report_w.as_raw_fd()));
    let spawned = match kind {
        Kind::Exec => agent.children().spawn(fork),
        Kind::Run => agent.children().spawn_workload(true, fork),
    };
    drop(child_ends);
    drop(report_w);
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => return refuse(&conn, e.to_string()),
    };
    // The report pipe ends at the exec (close-on-exec) or carries why there was none.
    let report = read_limited(report_r, 4096);
    if let Some((&status, message)) = report.split_first() {
        let _ = agent.children().wait(pid);
        let reply = ErrorReply {
            error: String::from_utf8_lossy(message).into_owned(),
            exit: Some(i32::from(status)),
        };
        let frame = Frame::control(&reply);
        let _ = write_frame(&mut &conn, frame.kind, &frame.payload);
        return;
    }
    stream(agent, conn, pid, ends, kind);
}

/// What the host reader hands the stdin feeder.
enum Stdin {
    Data(Vec<u8>),
    Eof,
}

/// A locked writer shared by the threads that send frames.
type Writer = Arc<Mutex<UnixStream>>;

fn send(writer: &Writer, kind: FrameKind, payload: &[u8]) -> bool {
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    write_frame(&mut *w, kind, payload).is_ok()
}

/// The session of a started process `pid`: streams until its status is sent.
fn stream(agent: &Agent, conn: UnixStream, pid: Pid, ends: AgentEnds, kind: Kind) {
    let children = agent.children();
    let _ = conn.set_write_timeout(None);
    let clones = conn.try_clone().and_then(|w| Ok((w, conn.try_clone()?)));
    let ((writer, reader), (exit_r, exit_w)) = match (clones, pipe()) {
        (Ok(clones), Ok(pipe)) => (clones, pipe),
        (Err(e), _) | (_, Err(e)) => {
            let _ = children.signal(pid, libc::SIGKILL);
            let code = children.wait(pid);
            let message = format!("cannot stream the process (it was killed, status {code}): {e}");
            return refuse(&conn, message);
        }
    };
    let writer: Writer = Arc::new(Mutex::new(writer));
    let exit_r = Arc::new(exit_r);
    let started = Frame::control(&OkReply {
        ok: true,
        version: None,
        pid: Some(pid.as_raw()),
    });
    send(&writer, started.kind, &started.payload);

    let ended = Arc::new(AtomicBool::new(false));
    let (stdin_tx, stdin_rx) = sync_channel::<Stdin>(STDIN_QUEUE);
    let (host_done_tx, host_done_rx) = sync_channel::<()>(1);
    let mut threads = Vec::new();
    let mut failed = None;
    let mut spawn = |name: &str, f: Box<dyn FnOnce() + Send>| match thread(name, f) {
        Ok(handle) => threads.push(handle),
        Err(e) => failed = Some(e),
    };
    let (outputs, stdin_target, master) = match ends {
        AgentEnds::Pipes {
            stdin,
            stdout,
            stderr,
        } => (
            vec![
                (Arc::new(stdout), FrameKind::Stdout),
                (Arc::new(stderr), FrameKind::Stderr),
            ],
            StdinTarget::Pipe(Some(stdin)),
            None,
        ),
        AgentEnds::Pty(master) => (
            vec![(master.clone(), FrameKind::Stdout)],
            StdinTarget::Pty(master.clone()),
            Some(master),
        ),
    };
    for (fd, frame_kind) in outputs {
        let (writer, exit_r) = (writer.clone(), exit_r.clone());
        spawn(
            "agent-output",
            Box::new(move || pump(&fd, frame_kind, &writer, &exit_r)),
        );
    }
    let feeder_ended = ended.clone();
    spawn(
        "agent-stdin",
        Box::new(move || feed_stdin(stdin_rx, stdin_target, &feeder_ended)),
    );
    let host = HostReader {
        agent: agent.clone(),
        pid,
        master,
        hang_up: kind == Kind::Exec,
        ended: ended.clone(),
    };
    spawn(
        "agent-host",
        Box::new(move || {
            host.run(reader, stdin_tx);
            let _ = host_done_tx.send(());
        }),
    );
    if let Some(e) = failed {
        // Without all its threads the session cannot run: end the process, and say so last.
        let _ = children.signal(pid, libc::SIGKILL);
        eprintln!("sandbox-guest init: warning: guest agent: cannot start a thread: {e}");
    }

    let code = children.wait(pid);
    ended.store(true, Ordering::SeqCst);
    drop(exit_w);
    // The pumps first (all the output before the status), then the status.
    let (pumps, rest): (Vec<_>, Vec<_>) = threads
        .into_iter()
        .partition(|t| t.thread().name() == Some("agent-output"));
    for pump in pumps {
        let _ = pump.join();
    }
    let exit = Frame::control(&ExitReply { exit: code });
    send(&writer, exit.kind, &exit.payload);
    let _ = conn.shutdown(Shutdown::Write);
    // The host closes once it has the status; a host that does not is cut off.
    if host_done_rx.recv_timeout(LINGER).is_err() {
        let _ = conn.shutdown(Shutdown::Read);
    }
    for t in rest {
        let _ = t.join();
    }
}

/// Copies one output of the process to frames of `kind` until its end (see the module doc
/// for the end after the process's exit, which closes `exit`'s other end).
fn pump(fd: &OwnedFd, kind: FrameKind, writer: &Writer, exit: &OwnedFd) {
    let mut buf = vec![0u8; CHUNK];
    let mut drain_until: Option<Instant> = None;
    loop {
        let timeout = match drain_until {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                left.min(QUIET).as_millis() as libc::c_int
            }
        };
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: exit.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let watched = if drain_until.is_none() { 2 } else { 1 };
        // SAFETY: poll reads and writes `watched` pollfds of `fds`.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), watched, timeout) };
        if rc < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return;
        }
        if rc == 0 {
            // Quiet since the process ended.
            return;
        }
        if watched == 2 && fds[1].revents != 0 {
            drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
        }
        if fds[0].revents == 0 {
            continue;
        }
        match nix::unistd::read(fd, &mut buf) {
            // The end (a pty whose slave is closed answers EIO).
            Ok(0) | Err(Errno::EIO) => return,
            Ok(n) => {
                if !send(writer, kind, &buf[..n]) {
                    // The host is gone: closing this end tells the process (EPIPE).
                    return;
                }
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => return,
        }
    }
}

/// Where stdin goes.
enum StdinTarget {
    /// The pipe's write end, until the end of stdin closes it.
    Pipe(Option<OwnedFd>),
    Pty(Arc<OwnedFd>),
}

/// Writes all of `bytes` to the non-blocking `fd`, waiting while it is full, giving up once
/// `ended` (the process is gone: nobody reads) or on an error.
fn write_while(fd: BorrowedFd<'_>, mut bytes: &[u8], ended: &AtomicBool) -> bool {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EAGAIN) => {
                if ended.load(Ordering::SeqCst) {
                    return false;
                }
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll reads and writes one pollfd.
                unsafe { libc::poll(&mut pfd, 1, QUIET.as_millis() as libc::c_int) };
            }
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// The stdin feeder: writes what the host sends, and ends the stdin at `STDIN_EOF` (a pipe:
/// closed; a terminal in canonical mode: its end-of-file character) or when the host is gone.
fn feed_stdin(rx: Receiver<Stdin>, mut target: StdinTarget, ended: &AtomicBool) {
    while let Ok(message) = rx.recv() {
        match (&mut target, message) {
            (StdinTarget::Pipe(fd), Stdin::Data(bytes)) => {
                if let Some(pipe) = fd {
                    if !write_while(pipe.as_fd(), &bytes, ended) {
                        *fd = None;
                    }
                }
            }
            (StdinTarget::Pipe(fd), Stdin::Eof) => *fd = None,
            (StdinTarget::Pty(master), Stdin::Data(bytes)) => {
                write_while(master.as_fd(), &bytes, ended);
            }
            (StdinTarget::Pty(master), Stdin::Eof) => {
                if let Some(eof) = canonical_eof(master.as_fd()) {
                    write_while(master.as_fd(), &[eof], ended);
                }
            }
        }
    }
}

/// The terminal's end-of-file character, when it is in canonical mode (a master's termios
/// calls act on its slave).
fn canonical_eof(master: BorrowedFd<'_>) -> Option<u8> {
    let termios = nix::sys::termios::tcgetattr(master).ok()?;
    let canonical = termios
        .local_flags
        .contains(nix::sys::termios::LocalFlags::ICANON);
    canonical.then(|| termios.control_chars[libc::VEOF])
}

/// Reads the host's frames during a session.
struct HostReader {
    agent: Agent,
    pid: Pid,
    master: Option<Arc<OwnedFd>>,
    /// When the host goes away before the process has ended: hang up on it (an exec with a
    /// terminal gets SIGHUP, as from a terminal that went away; a run is left alone).
    hang_up: bool,
    ended: Arc<AtomicBool>,
}

impl HostReader {
    fn run(self, conn: UnixStream, stdin: SyncSender<Stdin>) {
        loop {
            let frame = match read_frame(&mut &conn) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    // Garbage: nothing more can be understood, but it is read to its end (a
                    // socket closed with unread input would be reset, and the host might lose
                    // the status).
                    let _ = io::copy(&mut &conn, &mut io::sink());
                    break;
                }
            };
            match frame.kind {
                FrameKind::Stdin => {
                    if stdin.send(Stdin::Data(frame.payload)).is_err() {
                        break;
                    }
                }
                FrameKind::StdinEof => {
                    let _ = stdin.send(Stdin::Eof);
                }
                FrameKind::Control => self.control(&frame.payload),
                // Output frames are the guest's: a confused host, ignored.
                FrameKind::Stdout | FrameKind::Stderr => {}
            }
        }
        drop(stdin);
        if self.hang_up && self.master.is_some() && !self.ended.load(Ordering::SeqCst) {
            let _ = self.agent.children().signal(self.pid, libc::SIGHUP);
        }
    }

    /// `signal` (to the session's process) and `resize` (its terminal); anything else is
    /// ignored: a session has no channel for an answer but its status.
    fn control(&self, payload: &[u8]) {
        match Request::parse(payload, &SESSION_OPS) {
            Ok(Request::Signal { signal, .. }) if check_signal(signal).is_ok() => {
                let _ = self.agent.children().signal(self.pid, signal);
            }
            Ok(Request::Resize { rows, cols }) => {
                if let Some(master) = &self.master {
                    set_size(master.as_fd(), rows, cols);
                }
            }
            _ => {}
        }
    }
}
