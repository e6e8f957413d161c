//! The guest agent: what a VM's init serves over vsock (port
//! [`AGENT_PORT`](sandbox_protocol::agent::AGENT_PORT)) for the host: `ping`, `exec` (another
//! process, its stdio streamed), `run` (the workload of a plan started `on_request`),
//! `signal`, `stats` and `ps`. The protocol is [`sandbox_protocol::agent`].
//!
//! # Threads, not a poll loop
//! Init's main thread stays what it was: it forks the workload at boot, waits for signals
//! (`sigwaitinfo`) and is the only reaper (`waitpid(-1)`). The agent runs beside it on threads
//! started after init blocked its signals (so every thread leaves SIGCHLD and the forwarded
//! signals pending for the main thread):
//! - one accepts connections; each connection gets a thread for its one request;
//! - an `exec` or `run` session adds one thread per output stream, one feeding stdin and one
//!   reading the host's frames, while the connection's thread waits for the process and sends
//!   its status.
//!
//! Every stream is then plain blocking I/O with its natural back-pressure (a host that stops
//! reading stops the process's output, a process that stops reading stops the host's stdin),
//! and a slow or stuck stream can never delay another connection: a `signal` or `stats` is
//! answered while an exec streams. A poll loop would need that back-pressure, partial frames
//! and every session's state machine written by hand, for no gain at this scale: connections
//! are few and bounded ([`MAX_CONNECTIONS`]), thread stacks are virtual memory, and an idle
//! agent is one thread blocked in `accept`.
//!
//! Two things make threads safe in PID 1:
//! - Reaping: the agent never calls `waitpid`. Its children are forked with
//!   [`Children`]'s table locked and registered before it is unlocked; the main thread
//!   delivers each reaped status through the table, so it cannot steal the workload's status
//!   or lose an exec's ([`super::reaper::wait_for_workload`]).
//! - Forking: a fork copies only the forking thread, and another thread may hold the
//!   allocator's or stderr's lock at that moment; the child's side of
//!   [`exec::spawn_with`](super::exec::spawn_with) therefore allocates nothing and takes no
//!   lock before it execs.
//!
//! Only the host may connect: a vsock peer whose CID is not the host's (a process in the guest
//! using the kernel's loopback transport) is closed at once.
//!
//! The agent never takes init down: its failures are answers to the host, or one line on the
//! console (a listener that cannot be made, `accept` failing); a panic ends only its
//! connection's thread, and the locks init shares with it ignore poisoning. Without AF_VSOCK
//! (container mode, a VM without the vsock device) there is no agent and init runs as before.

mod session;
#[cfg(test)]
mod tests;

use super::exec::{self, Prepared};
use super::reaper::Children;
use nix::errno::Errno;
use sandbox_protocol::agent::{
    read_frame, write_frame, ErrorReply, Frame, FrameKind, OkReply, ProcessList, Request, AGENT_PORT, OPS,
    VERSION,
};
use sandbox_protocol::Plan;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The most connections served at once; more are refused with an error.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a new connection may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply may take to be written (the host not reading).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// `ioctl` on `/dev/vsock` giving this guest's CID (`_IO(7, 0xb9)`).
const IOCTL_VM_SOCKETS_GET_LOCAL_CID: libc::c_ulong = 0x7b9;

/// The workload a `run` starts (a plan started `on_request`).
#[derive(Debug, Clone)]
pub struct RunnableWorkload {
    pub prepared: Arc<Prepared>,
    /// Its stdio is a terminal (the plan's `process.terminal`), of this size.
    pub terminal: bool,
    pub size: Option<(u16, u16)>,
}

/// What the agent knows of its sandbox.
#[derive(Debug, Clone)]
pub struct Config {
    /// What `run` starts; `None`: the workload starts at boot, and `run` is refused.
    pub workload: Option<RunnableWorkload>,
    /// An exec's environment, under the request's variables: the workload's.
    pub env: Vec<(String, String)>,
    /// An exec's working directory and user unless the request names them: the workload's.
    pub workdir: Option<String>,
    pub user: Option<(u32, u32)>,
    /// `signal` with `all` may signal every process (only as PID 1, where `kill(-1)` spares
    /// the caller's own process).
    pub signal_all: bool,
    /// How long a new connection may take to send its request.
    pub request_timeout: Duration,
}

impl Config {
    /// The agent's view of `plan`: `workload` is what `run` starts (for `start: on_request`).
    pub fn from_plan(plan: &Plan, workload: Option<Arc<Prepared>>) -> Config {
        let mut env = exec::environment(plan);
        // The ready channel is the workload's.
        env.retain(|(k, _)| k != sandbox_protocol::READY_ENV);
        Config {
            workload: workload.map(|prepared| RunnableWorkload {
                prepared,
                terminal: plan.process.terminal,
                size: plan.process.console_size,
            }),
            env,
            workdir: plan.workdir.clone(),
            user: plan.user,
            signal_all: std::process::id() == 1,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// The agent: its configuration, the children it shares with init, and its sessions.
#[derive(Debug, Clone)]
pub struct Agent {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    children: Arc<Children>,
    connections: AtomicUsize,
    /// Exec and run sessions not yet finished.
    sessions: Mutex<usize>,
    sessions_done: Condvar,
}

/// Starts the agent for `plan` if this guest has a vsock device: listens on
/// [`AGENT_PORT`] and accepts on a thread. `run` is what `run` starts (`start: on_request`).
/// `None` without vsock (silently: init then runs as it always has) or when the agent cannot
/// start (one line on the console).
pub fn start(plan: &Plan, run: Option<Arc<Prepared>>, children: Arc<Children>) -> Option<Agent> {
    let listener = match listen_vsock(AGENT_PORT) {
        Ok(Some(listener)) => listener,
        Ok(None) => return None,
        Err(e) => {
            eprintln!(
                "sandbox-guest init: warning: no guest agent: cannot listen on vsock port {AGENT_PORT}: {e}"
            );
            return None;
        }
    };
    let agent = Agent::new(Config::from_plan(plan, run), children);
    match agent.accept_on_thread(listener) {
        Ok(()) => Some(agent),
        Err(e) => {
            eprintln!("sandbox-guest init: warning: no guest agent: cannot start its thread: {e}");
            None
        }
    }
}

/// A listening AF_VSOCK socket on `port` (any CID); `None` when this guest has no vsock
/// device (no `/dev/vsock`, no CID of its own, or no AF_VSOCK in the kernel).
pub fn listen_vsock(port: u32) -> io::Result<Option<OwnedFd>> {
    let Ok(dev) = std::fs::File::open("/dev/vsock") else {
        return Ok(None);
    };
    let mut cid: u32 = libc::VMADDR_CID_ANY;
    // SAFETY: this ioctl writes one u32, which `cid` is.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), IOCTL_VM_SOCKETS_GET_LOCAL_CID, &mut cid) };
    // Without a guest transport the kernel answers VMADDR_CID_ANY (or the loopback's CID 1).
    if rc < 0 || cid == libc::VMADDR_CID_ANY || cid <= libc::VMADDR_CID_HOST {
        return Ok(None);
    }
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_vm is valid; the fields are set below.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    addr.svm_port = port;
    // SAFETY: bind reads `addr`, a sockaddr_vm of the size given.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) takes no pointers.
    if unsafe { libc::listen(socket.as_raw_fd(), 16) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(socket))
}

/// Spawns a named thread (an error, not a panic, when the system has none to give).
fn thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// Writes one JSON `CONTROL` frame, with a bounded wait for a host that does not read.
fn reply<T: serde::Serialize>(conn: &UnixStream, value: &T) {
    let _ = conn.set_write_timeout(Some(REPLY_TIMEOUT));
    let frame = Frame::control(value);
    let _ = write_frame(&mut &*conn, frame.kind, &frame.payload);
}

/// Refuses the connection's request with `message`.
fn refuse(conn: &UnixStream, message: impl Into<String>) {
    reply(conn, &ErrorReply::new(message));
}

impl Agent {
    /// An agent that serves connections handed to [`Agent::serve`] or accepted by
    /// [`Agent::accept_on_thread`].
    pub fn new(config: Config, children: Arc<Children>) -> Agent {
        Agent {
            shared: Arc::new(Shared {
                config,
                children,
                connections: AtomicUsize::new(0),
                sessions: Mutex::new(0),
                sessions_done: Condvar::new(),
            }),
        }
    }

    /// The children the agent shares with init.
    pub fn children(&self) -> &Children {
        &self.shared.children
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Accepts connections on `listener` on a thread of its own, each served by
    /// [`Agent::serve`].
    pub fn accept_on_thread(&self, listener: OwnedFd) -> io::Result<()> {
        let agent = self.clone();
        thread("agent-accept", move || agent.accept_loop(listener)).map(drop)
    }

    fn accept_loop(&self, listener: OwnedFd) {
        let mut complained = false;
        loop {
            // SAFETY: an all-zero sockaddr_storage is valid; accept4 fills it.
            let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: accept4 writes at most `len` bytes of the peer's address into `peer`.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    (&mut peer as *mut libc::sockaddr_storage).cast(),
                    &mut len,
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                let conn = unsafe { OwnedFd::from_raw_fd(fd) };
                if from_the_host(&peer) {
                    self.serve(conn);
                }
                continue;
            }
            match Errno::last() {
                Errno::EINTR | Errno::ECONNABORTED | Errno::EAGAIN => {}
                Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM => {
                    if !complained {
                        eprintln!(
                            "sandbox-guest init: warning: guest agent: accept: {}: retrying",
                            Errno::last()
                        );
                        complained = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                e => {
                    eprintln!("sandbox-guest init: warning: guest agent stopped: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Serves one connection on a thread of its own (the stream is an accepted vsock socket,
    /// or any other stream socket: `UnixStream` makes only plain socket calls on it).
    pub fn serve(&self, conn: OwnedFd) {
        let conn = UnixStream::from(conn);
        if self.shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            self.shared.connections.fetch_sub(1, Ordering::SeqCst);
            refuse(
                &conn,
                format!("the guest agent serves at most {MAX_CONNECTIONS} connections at once: retry later"),
            );
            return;
        }
        let agent = self.clone();
        let started = thread("agent-conn", move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent.handle(conn)));
            if outcome.is_err() {
                eprintln!("sandbox-guest init: warning: guest agent: internal error in a connection (a bug)");
            }
            agent.shared.connections.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = started {
            self.shared.connections.fetch_sub(1, Ordering::SeqCst);
            eprintln!("sandbox-guest init: warning: guest agent: cannot start a thread: {e}");
        }
    }

    /// Reads the request and answers it (an exec or run: its whole session).
    fn handle(&self, conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(self.config().request_timeout));
        let frame = match read_frame(&mut &conn) {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => return refuse(&conn, format!("bad request frame: {e}")),
        };
        if frame.kind != FrameKind::Control {
            return refuse(
                &conn,
                format!(
                    "the first frame must be a control frame (kind 1) with a request, not {:?}",
                    frame.kind
                ),
            );
        }
        let request = match Request::parse(&frame.payload, &OPS) {
            Ok(request) => request,
            Err(message) => return refuse(&conn, message),
        };
        let _ = conn.set_read_timeout(None);
        match request {
            Request::Ping => reply(
                &conn,
                &OkReply {
                    ok: true,
                    version: Some(VERSION),
                    pid: None,
                },
            ),
            Request::Stats => match stats() {
                Ok(stats) => reply(&conn, &stats),
                Err(message) => refuse(&conn, message),
            },
            Request::Ps => match ps() {
                Ok(list) => reply(&conn, &list),
                Err(message) => refuse(&conn, message),
            },
            Request::Signal { signal, all } => match self.signal(signal, all) {
                Ok(()) => reply(
                    &conn,
                    &OkReply {
                        ok: true,
                        version: None,
                        pid: None,
                    },
                ),
                Err(message) => refuse(&conn, message),
            },
            Request::Exec(request) => session::exec(self, conn, request),
            Request::Run => session::run(self, conn),
            // Not among OPS: only a session's control message.
            Request::Resize { .. } => refuse(&conn, "resize is only for an exec or run session"),
        }
    }

    /// `signal`: to the workload, or with `all` to every process but init.
    fn signal(&self, signal: i32, all: bool) -> Result<(), String> {
        check_signal(signal)?;
        if all {
            if !self.config().signal_all {
                return Err("signal with all needs the agent to run in init (PID 1)".into());
            }
            // SAFETY: kill(2) takes no pointers; as PID 1, -1 is every process but this one.
            return match Errno::result(unsafe { libc::kill(-1, signal) }) {
                Ok(_) | Err(Errno::ESRCH) => Ok(()),
                Err(e) => Err(format!("cannot send signal {signal} to all processes: {e}")),
            };
        }
        match self.children().signal_workload(signal) {
            Ok(true) => Ok(()),
            Ok(false) => Err(
                match (&self.config().workload, self.children().workload_status()) {
                    (_, Some(code)) => format!("the workload has ended (status {code}): nothing to signal"),
                    (Some(_), None) => "the workload has not been started: send run first".into(),
                    (None, None) => "the workload is not running".into(),
                },
            ),
            Err(e) => Err(format!("cannot send signal {signal} to the workload: {e}")),
        }
    }

    /// Counts a session until the returned guard is dropped.
    fn session_started(&self) -> SessionGuard {
        *self.shared.sessions.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        SessionGuard { agent: self.clone() }
    }

    /// Waits until every exec and run session has finished (sent its status and seen the
    /// host close), at most `timeout`; whether they all did. Init calls it after the workload
    /// ended and the rest was killed, before the VM goes down.
    pub fn wait_sessions(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut count = self.shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = self
                .shared
                .sessions_done
                .wait_timeout(count, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// A running session, counted for [`Agent::wait_sessions`].
struct SessionGuard {
    agent: Agent,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let shared = &self.agent.shared;
        let mut count = shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        shared.sessions_done.notify_all();
    }
}

/// Whether an accepted peer may use the agent: over vsock only the host (CID 2) — the guest
/// kernel's loopback transport would otherwise let any process in the guest, whatever its
/// user, exec as root through the agent. (Other families only come from tests.)
fn from_the_host(peer: &libc::sockaddr_storage) -> bool {
    if i32::from(peer.ss_family) != libc::AF_VSOCK {
        return true;
    }
    // SAFETY: the family says the storage holds a sockaddr_vm, which is smaller.
    let vm = unsafe { &*(peer as *const libc::sockaddr_storage).cast::<libc::sockaddr_vm>() };
    vm.svm_cid == libc::VMADDR_CID_HOST
}

/// A signal number this kernel has (1 to 64).
fn check_signal(signal: i32) -> Result<(), String> {
    if (1..=64).contains(&signal) {
        Ok(())
    } else {
        Err(format!(
            "signal {signal} is not a signal number: give 1 to 64 (15 is SIGTERM)"
        ))
    }
}

/// The pids in `/proc`.
fn pids() -> Result<Vec<i32>, String> {
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    Ok(dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect())
}

/// `stats`, from this guest's /proc.
fn stats() -> Result<sandbox_protocol::agent::Stats, String> {
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"));
    let meminfo = read("/proc/meminfo")?;
    let loadavg = read("/proc/loadavg")?;
    let uptime = read("/proc/uptime")?;
    sandbox_protocol::agent::parse_stats(&meminfo, &loadavg, &uptime, pids()?.len() as u64)
        .ok_or_else(|| "cannot parse /proc/meminfo, /proc/loadavg or /proc/uptime".to_string())
}

/// `ps`, from this guest's /proc (processes that end meanwhile are left out).
fn ps() -> Result<ProcessList, String> {
    let mut processes: Vec<_> = pids()?
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            sandbox_protocol::agent::parse_proc_stat(&stat)
        })
        .collect();
    processes.sort_by_key(|p| p.pid);
    Ok(ProcessList { processes })
}

/// Reads a descriptor to its end, at most `limit` bytes (the spawn report).
fn read_limited(fd: OwnedFd, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = std::fs::File::from(fd).take(limit as u64).read_to_end(&mut out);
    out
}
