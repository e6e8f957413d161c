//! The host's client of the guest agent that a VM's init runs (protocol:
//! [`sandbox_protocol::agent`]).
//!
//! The VMM's vsock device exposes the guest's ports through one unix socket
//! (`<sandbox dir>/vsock.sock`): [`Agent::connect`] dials it, asks for
//! [`AGENT_PORT`] (`CONNECT 1024\n` → `OK <n>\n`), and retries while the guest does not listen
//! yet (a booting VM). Each request then has a connection of its own: `ping`, `signal`,
//! `stats` and `ps` return their answer; `exec` and `run` return an [`ExecSession`], whose
//! [`ExecSession::pump`] copies local descriptors to and from the process and returns its
//! status, while a [`Controller`] (cloneable, for another thread) sends stdin, a resize or a
//! signal.

use sandbox_protocol::agent::{
    read_frame, write_frame, ErrorReply, ExitReply, FrameError, FrameKind, OkReply, ProcessList, Request,
    AGENT_PORT, MAX_FRAME_PAYLOAD,
};
pub use sandbox_protocol::agent::{ExecRequest, Process, Stats, VERSION, VSOCK_SOCKET_NAME};
use serde::de::DeserializeOwned;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A connection made by [`Agent::connect`] is used for the first request if that comes within
/// this (the guest cuts off a connection that sends no request for 10 s).
const FRESH: Duration = Duration::from_secs(5);
/// Bytes read from a local input per frame.
const CHUNK: usize = 64 * 1024;

/// Why talking to the guest agent failed; each message names the socket and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "cannot reach the guest agent through {} within {waited:?}: {last}: is the VM running \
         with a vsock device, and is its guest program new enough to run the agent?",
        path.display()
    )]
    Unreachable {
        path: PathBuf,
        waited: Duration,
        last: String,
    },
    #[error("guest agent through {}: {doing}: {source}", path.display())]
    Io {
        path: PathBuf,
        doing: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "guest agent through {}: {what}: the guest program and this sandbox differ in version \
         (protocol {VERSION} here): rebuild the image's guest program",
        path.display()
    )]
    Protocol { path: PathBuf, what: String },
    #[error("the guest agent refused {op}: {message}")]
    Refused { op: &'static str, message: String },
    /// The process could not be started (the message says why: not found, not executable, ...).
    #[error("{message}")]
    SpawnFailed { message: String, exit: i32 },
    #[error(
        "guest agent through {}: the connection ended before the process's exit status: the VM \
         stopped, or the agent failed (see the VM's console)",
        path.display()
    )]
    NoStatus { path: PathBuf },
}

impl AgentError {
    /// The status a CLI should exit with for a process that could not be started (127 not
    /// found, 126 not executable); `None` for other failures.
    pub fn exit_status(&self) -> Option<i32> {
        match self {
            AgentError::SpawnFailed { exit, .. } => Some(*exit),
            _ => None,
        }
    }
}

/// The guest agent of one VM.
#[derive(Debug)]
pub struct Agent {
    path: PathBuf,
    timeout: Duration,
    /// The connection `connect` made, for the first request.
    first: Mutex<Option<(UnixStream, Instant)>>,
}

impl Agent {
    /// Dials the VM's vsock socket `uds_path` and the agent's port, retrying while the socket
    /// does not exist or the guest does not listen yet, for at most `timeout` (which also
    /// bounds each later connection and each short answer).
    pub fn connect(uds_path: impl AsRef<Path>, timeout: Duration) -> Result<Agent, AgentError> {
        let path = uds_path.as_ref().to_path_buf();
        let stream = dial(&path, timeout)?;
        Ok(Agent {
            path,
            timeout,
            first: Mutex::new(Some((stream, Instant::now()))),
        })
    }

    /// The VM's vsock socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A connection for one request: the one `connect` made while fresh, else a new one.
    fn connection(&self) -> Result<UnixStream, AgentError> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        match first {
            Some((stream, made)) if made.elapsed() < FRESH => Ok(stream),
            _ => dial(&self.path, self.timeout),
        }
    }

    fn io(&self, doing: &'static str) -> impl FnOnce(io::Error) -> AgentError + '_ {
        move |source| AgentError::Io {
            path: self.path.clone(),
            doing,
            source,
        }
    }

    /// Sends `request` on a new connection and reads the first answer (bounded by the
    /// timeout); a refusal is an error.
    fn ask(&self, request: &Request) -> Result<(UnixStream, Vec<u8>), AgentError> {
        let stream = self.connection()?;
        let payload = serde_json::to_vec(request).expect("requests always serialize");
        write_frame(&mut &stream, FrameKind::Control, &payload)
            .map_err(|e| frame_error(&self.path, "sending the request", e))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(self.io("setting a read timeout"))?;
        let frame = read_frame(&mut &stream)
            .map_err(|e| frame_error(&self.path, "reading the answer", e))?
            .ok_or_else(|| AgentError::NoStatus {
                path: self.path.clone(),
            })?;
        if frame.kind != FrameKind::Control {
            return Err(self.protocol(format!("a {:?} frame instead of the answer", frame.kind)));
        }
        if let Some(refusal) = ErrorReply::from_payload(&frame.payload) {
            return Err(match refusal.exit {
                Some(exit) => AgentError::SpawnFailed {
                    message: refusal.error,
                    exit,
                },
                None => AgentError::Refused {
                    op: request.op(),
                    message: refusal.error,
                },
            });
        }
        Ok((stream, frame.payload))
    }

    fn protocol(&self, what: String) -> AgentError {
        AgentError::Protocol {
            path: self.path.clone(),
            what,
        }
    }

    /// A one-answer request.
    fn answer<T: DeserializeOwned>(&self, request: &Request) -> Result<T, AgentError> {
        let (_, payload) = self.ask(request)?;
        serde_json::from_slice(&payload).map_err(|e| {
            self.protocol(format!(
                "unexpected answer to {} ({e}): {}",
                request.op(),
                String::from_utf8_lossy(&payload)
            ))
        })
    }

    /// Checks the agent answers; returns its protocol version.
    pub fn ping(&self) -> Result<u32, AgentError> {
        let reply: OkReply = self.answer(&Request::Ping)?;
        reply
            .version
            .ok_or_else(|| self.protocol("ping answered without a version".into()))
    }

    /// Sends `signal` to the workload, or with `all` to every process in the VM but init.
    pub fn signal(&self, signal: i32, all: bool) -> Result<(), AgentError> {
        let _: OkReply = self.answer(&Request::Signal { signal, all })?;
        Ok(())
    }

    /// The guest's memory, process count, load and uptime.
    pub fn stats(&self) -> Result<Stats, AgentError> {
        self.answer(&Request::Stats)
    }

    /// The guest's processes, by pid.
    pub fn ps(&self) -> Result<Vec<Process>, AgentError> {
        let list: ProcessList = self.answer(&Request::Ps)?;
        Ok(list.processes)
    }

    /// Starts another process in the VM. A process that cannot be started is
    /// [`AgentError::SpawnFailed`], with the status (127, 126) to exit with.
    pub fn exec(&self, request: &ExecRequest) -> Result<ExecSession, AgentError> {
        self.session(&Request::Exec(request.clone()))
    }

    /// Starts the workload of a VM whose plan starts it on request (once).
    pub fn run(&self) -> Result<ExecSession, AgentError> {
        self.session(&Request::Run)
    }

    fn session(&self, request: &Request) -> Result<ExecSession, AgentError> {
        let (stream, payload) = self.ask(request)?;
        let pid = serde_json::from_slice::<OkReply>(&payload)
            .ok()
            .and_then(|r| r.pid)
            .ok_or_else(|| {
                self.protocol(format!(
                    "{} answered {} instead of {{\"ok\":true,\"pid\":N}}",
                    request.op(),
                    String::from_utf8_lossy(&payload)
                ))
            })?;
        stream
            .set_read_timeout(None)
            .map_err(self.io("clearing the read timeout"))?;
        let writer = stream
            .try_clone()
            .map_err(self.io("duplicating the connection"))?;
        Ok(ExecSession {
            reader: Some(stream),
            controller: Controller {
                stream: Arc::new(Mutex::new(Some(writer))),
                path: Arc::new(self.path.clone()),
            },
            pid,
            path: self.path.clone(),
        })
    }
}

fn frame_error(path: &Path, doing: &'static str, e: FrameError) -> AgentError {
    match e {
        FrameError::Io(source) => AgentError::Io {
            path: path.to_path_buf(),
            doing,
            source,
        },
        other => AgentError::Protocol {
            path: path.to_path_buf(),
            what: format!("{doing}: {other}"),
        },
    }
}

/// Connects to the agent's port through the VMM's socket, retrying until `timeout`.
fn dial(path: &Path, timeout: Duration) -> Result<UnixStream, AgentError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let last = match dial_once(path, left.max(Duration::from_millis(50))) {
            Ok(stream) => return Ok(stream),
            Err(e) => e,
        };
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(AgentError::Unreachable {
                path: path.to_path_buf(),
                waited: timeout,
                last,
            });
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// One try: connect, `CONNECT <port>`, `OK <n>`. The error says what happened.
fn dial_once(path: &Path, timeout: Duration) -> Result<UnixStream, String> {
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("{} does not exist (yet)", path.display()),
        io::ErrorKind::ConnectionRefused => "nothing listens on it (yet)".to_string(),
        _ => format!("cannot connect: {e}"),
    })?;
    let timeouts = |t: Option<Duration>| {
        stream
            .set_read_timeout(t)
            .and_then(|()| stream.set_write_timeout(t))
    };
    timeouts(Some(timeout)).map_err(|e| format!("cannot set a timeout: {e}"))?;
    (&stream)
        .write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())
        .map_err(|e| format!("cannot send CONNECT: {e}"))?;
    // Byte by byte: what follows the line is the guest's.
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8];
        match (&stream).read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "the VMM closed the connection: nothing listens on vsock port {AGENT_PORT} in the guest (yet)"
                ))
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < 64 => line.push(byte[0]),
            Ok(_) => return Err("the VMM's answer to CONNECT is not a line".into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("no answer to CONNECT: {e}")),
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(format!(
            "the VMM answered {:?} to CONNECT {AGENT_PORT} (expected \"OK <port>\")",
            String::from_utf8_lossy(&line)
        ));
    }
    timeouts(None).map_err(|e| format!("cannot clear the timeouts: {e}"))?;
    Ok(stream)
}

/// Sends stdin, resizes and signals into a session; clone it for another thread (a signal
/// forwarder, a SIGWINCH handler).
#[derive(Debug, Clone)]
pub struct Controller {
    /// The write side; `None` once the session has ended.
    stream: Arc<Mutex<Option<UnixStream>>>,
    path: Arc<PathBuf>,
}

impl Controller {
    fn send(&self, kind: FrameKind, payload: &[u8]) -> Result<(), AgentError> {
        let mut guard = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        // After the status there is nobody to tell.
        let Some(stream) = guard.as_mut() else {
            return Ok(());
        };
        write_frame(stream, kind, payload).map_err(|e| frame_error(&self.path, "sending to the process", e))
    }

    fn control(&self, request: &Request) -> Result<(), AgentError> {
        let payload = serde_json::to_vec(request).expect("requests always serialize");
        self.send(FrameKind::Control, &payload)
    }

    /// Sends bytes to the process's stdin.
    pub fn stdin(&self, bytes: &[u8]) -> Result<(), AgentError> {
        for chunk in bytes.chunks(MAX_FRAME_PAYLOAD) {
            self.send(FrameKind::Stdin, chunk)?;
        }
        Ok(())
    }

    /// Ends the process's stdin (with a terminal: its end-of-file character).
    pub fn close_stdin(&self) -> Result<(), AgentError> {
        self.send(FrameKind::StdinEof, &[])
    }

    /// Resizes the process's terminal (its foreground job gets SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), AgentError> {
        self.control(&Request::Resize { rows, cols })
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) -> Result<(), AgentError> {
        self.control(&Request::Signal { signal, all: false })
    }

    /// Closes the write side: no more stdin, resizes or signals.
    fn close(&self) {
        self.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// What a session delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The process's status (128 + N for signal N); the session is over.
    Exit(i32),
}

/// Local descriptors for [`ExecSession::pump`]: stdin (`None`: the process's stdin ends at
/// once), stdout and stderr.
#[derive(Debug, Clone, Copy)]
pub struct LocalIo<'a> {
    pub stdin: Option<BorrowedFd<'a>>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

/// A process started by `exec` or `run`.
#[derive(Debug)]
pub struct ExecSession {
    /// The read side; `None` once the status has arrived.
    reader: Option<UnixStream>,
    controller: Controller,
    pid: i32,
    path: PathBuf,
}

impl ExecSession {
    /// The process's pid in the guest.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A handle that sends stdin, resizes and signals, from any thread.
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// The next output, or the status (after which the connection is closed, telling the
    /// guest it arrived).
    pub fn next_output(&mut self) -> Result<Output, AgentError> {
        let path = &self.path;
        let no_status = || AgentError::NoStatus { path: path.clone() };
        let reader = self.reader.as_ref().ok_or_else(no_status)?;
        let frame = read_frame(&mut &*reader)
            .map_err(|e| frame_error(path, "reading the process's output", e))?
            .ok_or_else(no_status)?;
        let protocol = |what: String| AgentError::Protocol {
            path: path.clone(),
            what,
        };
        let output = match frame.kind {
            FrameKind::Stdout => Output::Stdout(frame.payload),
            FrameKind::Stderr => Output::Stderr(frame.payload),
            FrameKind::Control => match serde_json::from_slice::<ExitReply>(&frame.payload) {
                Ok(exit) => Output::Exit(exit.exit),
                Err(_) => {
                    return Err(protocol(format!(
                        "unexpected control message in a session: {}",
                        String::from_utf8_lossy(&frame.payload)
                    )))
                }
            },
            kind => return Err(protocol(format!("the guest sent a {kind:?} frame"))),
        };
        if let Output::Exit(_) = output {
            self.controller.close();
            self.reader = None;
        }
        Ok(output)
    }

    /// Copies `io.stdin` to the process (on a thread of its own) and its output to
    /// `io.stdout` and `io.stderr` until it ends; returns its status. Output the local side
    /// no longer takes (a closed pipe) is dropped, and the process runs on.
    pub fn pump(mut self, io: LocalIo<'_>) -> Result<i32, AgentError> {
        let controller = self.controller();
        let (stop_r, stop_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| AgentError::Io {
                path: self.path.clone(),
                doing: "making a pipe",
                source: e.into(),
            })?;
        std::thread::scope(|scope| {
            match io.stdin {
                Some(stdin) => {
                    scope.spawn(move || copy_stdin(stdin, &stop_r, &controller));
                }
                None => controller.close_stdin()?,
            }
            let status = loop {
                match self.next_output() {
                    Ok(Output::Stdout(bytes)) => write_all(io.stdout, &bytes),
                    Ok(Output::Stderr(bytes)) => write_all(io.stderr, &bytes),
                    Ok(Output::Exit(code)) => break Ok(code),
                    Err(e) => break Err(e),
                }
            };
            // Ends the stdin copier.
            drop(stop_w);
            status
        })
    }
}

/// Waits until `fd` is readable (true), or `stop` is readable or closed, or polling fails
/// (false).
pub(crate) fn readable_unless_stopped(fd: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> bool {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll reads and writes the two pollfds of `fds`.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        return fds[1].revents == 0;
    }
}

/// Copies the local stdin to the process until its end (then ends the process's stdin), the
/// session's end, or `stop` (closed by the pump).
fn copy_stdin(stdin: BorrowedFd<'_>, stop: &OwnedFd, controller: &Controller) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if !readable_unless_stopped(stdin, stop.as_fd()) {
            return;
        }
        match nix::unistd::read(stdin, &mut buf) {
            Ok(0) => {
                let _ = controller.close_stdin();
                return;
            }
            Ok(n) => {
                if controller.stdin(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(_) => {
                let _ = controller.close_stdin();
                return;
            }
        }
    }
}

/// Writes all of `bytes` to `fd` (waiting if it is non-blocking and full); gives up on an
/// error.
fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll reads and writes one pollfd.
                unsafe { libc::poll(&mut pfd, 1, -1) };
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The client against a fake VMM socket (the CONNECT handshake) and a scripted guest.

    use super::*;
    use sandbox_protocol::agent::{Frame, OPS};
    use serde_json::{json, Value};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixListener;

    const WAIT: Duration = Duration::from_secs(10);

    /// A fake VMM on `path`: the first `refuse` connections are closed after CONNECT (the
    /// guest not listening yet); the rest get `OK` and are handed to `guest`.
    fn fake_vmm(
        path: &Path,
        refuse: usize,
        guest: impl Fn(UnixStream) + Send + Sync + 'static,
    ) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        let guest = Arc::new(guest);
        std::thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let conn = conn.unwrap();
                let mut line = [0u8; 13];
                (&conn).read_exact(&mut line).unwrap();
                assert_eq!(&line, b"CONNECT 1024\n");
                if i < refuse {
                    continue;
                }
                (&conn).write_all(b"OK 1073741824\n").unwrap();
                let guest = guest.clone();
                std::thread::spawn(move || guest(conn));
            }
        })
    }

    fn request_of(conn: &UnixStream) -> Value {
        let frame = read_frame(&mut &*conn).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Control);
        let _ = Request::parse(&frame.payload, &OPS).unwrap();
        serde_json::from_slice(&frame.payload).unwrap()
    }

    fn reply(conn: &UnixStream, value: Value) {
        let frame = Frame::control(&value);
        write_frame(&mut &*conn, frame.kind, &frame.payload).unwrap();
    }

    fn out(conn: &UnixStream, kind: FrameKind, bytes: &[u8]) {
        write_frame(&mut &*conn, kind, bytes).unwrap();
    }

    /// A guest answering ping, stats, ps and signal, and running `sh -c` execs as a script:
    /// `echo` (stdin back as stdout until its end, exit 0), `fail` (127), else output on both
    /// streams and exit 3.
    fn scripted_guest(conn: UnixStream) {
        let request = request_of(&conn);
        match request["op"].as_str().unwrap() {
            "ping" => reply(&conn, json!({"ok":true,"version":1})),
            "signal" if request["all"] == true => reply(&conn, json!({"error":"no all here"})),
            "signal" => reply(&conn, json!({"ok":true})),
            "stats" => reply(
                &conn,
                json!({"memory_total_bytes":100,"memory_available_bytes":60,"memory_used_bytes":40,
                       "pids":3,"load":0.5,"uptime_seconds":1.5}),
            ),
            "ps" => reply(
                &conn,
                json!({"processes":[{"pid":1,"ppid":0,"comm":"init","state":"S"}]}),
            ),
            "exec" | "run" => {
                let argv: Vec<String> = serde_json::from_value(request["argv"].clone()).unwrap_or_default();
                match argv.first().map(String::as_str) {
                    Some("fail") => reply(&conn, json!({"error":"fail: command not found","exit":127})),
                    Some("echo") => {
                        reply(&conn, json!({"ok":true,"pid":42}));
                        loop {
                            let frame = read_frame(&mut &conn).unwrap().unwrap();
                            match frame.kind {
                                FrameKind::Stdin => out(&conn, FrameKind::Stdout, &frame.payload),
                                FrameKind::StdinEof => break,
                                _ => {}
                            }
                        }
                        reply(&conn, json!({"exit":0}));
                    }
                    Some("wait-signal") => {
                        reply(&conn, json!({"ok":true,"pid":43}));
                        let mut resized = None;
                        loop {
                            let frame = read_frame(&mut &conn).unwrap().unwrap();
                            if frame.kind != FrameKind::Control {
                                continue;
                            }
                            let control: Value = serde_json::from_slice(&frame.payload).unwrap();
                            match control["op"].as_str() {
                                Some("resize") => resized = Some(control["rows"].as_u64().unwrap()),
                                Some("signal") => {
                                    let code = 128
                                        + control["signal"].as_i64().unwrap()
                                        + resized.unwrap_or(0) as i64;
                                    reply(&conn, json!({"exit":code}));
                                    break;
                                }
                                _ => {}
                            }
                        }
                    }
                    Some("vanish") => {
                        reply(&conn, json!({"ok":true,"pid":44}));
                        // Gone without a status (the VM stopped).
                        return;
                    }
                    _ => {
                        reply(&conn, json!({"ok":true,"pid":45}));
                        out(&conn, FrameKind::Stdout, b"to stdout\n");
                        out(&conn, FrameKind::Stderr, b"to stderr\n");
                        reply(&conn, json!({"exit":3}));
                    }
                }
            }
            _ => reply(&conn, json!({"error":"unknown op"})),
        }
        // Waits for the host to close (it has the status).
        let _ = io::copy(&mut &conn, &mut io::sink());
    }

    fn exec(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            ..ExecRequest::default()
        }
    }

    /// Reads what a pipe's read end holds once its writers are gone.
    fn drain(fd: OwnedFd) -> String {
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn connect_retries_until_the_socket_exists_and_the_guest_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VSOCK_SOCKET_NAME);
        let late = path.clone();
        // The VMM's socket appears after a while, and the guest listens after two tries.
        let vmm = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            fake_vmm(&late, 2, scripted_guest)
        });
        let agent = Agent::connect(&path, WAIT).unwrap();
        assert_eq!(agent.ping().unwrap(), 1);
        assert_eq!(
            agent.ping().unwrap(),
            1,
            "each request has a connection of its own"
        );
        let stats = agent.stats().unwrap();
        assert_eq!((stats.memory_used_bytes, stats.pids), (40, 3));
        assert_eq!(agent.ps().unwrap()[0].comm, "init");
        agent.signal(15, false).unwrap();
        let refused = agent.signal(15, true).unwrap_err();
        assert!(
            matches!(&refused, AgentError::Refused { op: "signal", .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("no all here"), "{refused}");
        drop(vmm);
    }

    #[test]
    fn an_unreachable_agent_is_one_error_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let start = Instant::now();
        let err = Agent::connect(&path, Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(300) && start.elapsed() < WAIT);
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("does not exist"),
            "{text}"
        );
        // A VMM whose guest never listens.
        let _vmm = fake_vmm(&path, usize::MAX, scripted_guest);
        let text = Agent::connect(&path, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(text.contains("nothing listens on vsock port 1024"), "{text}");
    }

    #[test]
    fn exec_pumps_output_to_local_descriptors_and_returns_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let _vmm = fake_vmm(&path, 0, scripted_guest);
        let agent = Agent::connect(&path, WAIT).unwrap();
        let session = agent.exec(&exec(&["sh", "-c", "x"])).unwrap();
        assert_eq!(session.pid(), 45);
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        let io = LocalIo {
            stdin: None,
            stdout: out_w.as_fd(),
            stderr: err_w.as_fd(),
        };
        assert_eq!(session.pump(io).unwrap(), 3);
        drop((out_w, err_w));
        assert_eq!(drain(out_r), "to stdout\n");
        assert_eq!(drain(err_r), "to stderr\n");
    }

    #[test]
    fn pump_copies_local_stdin_to_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let _vmm = fake_vmm(&path, 0, scripted_guest);
        let agent = Agent::connect(&path, WAIT).unwrap();
        let (in_r, in_w) = nix::unistd::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut file = std::fs::File::from(in_w);
            file.write_all(b"line one\n").unwrap();
            file.write_all(&vec![b'z'; 200_000]).unwrap();
        });
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let reader = std::thread::spawn(move || drain(out_r));
        let session = agent.exec(&exec(&["echo"])).unwrap();
        let io = LocalIo {
            stdin: Some(in_r.as_fd()),
            stdout: out_w.as_fd(),
            stderr: out_w.as_fd(),
        };
        assert_eq!(session.pump(io).unwrap(), 0);
        writer.join().unwrap();
        drop(out_w);
        let text = reader.join().unwrap();
        assert_eq!(text.len(), 9 + 200_000);
        assert!(text.starts_with("line one\nzz"));
    }

    #[test]
    fn run_is_a_session_like_exec() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let _vmm = fake_vmm(&path, 0, scripted_guest);
        let agent = Agent::connect(&path, WAIT).unwrap();
        let mut run = agent.run().unwrap();
        assert_eq!(run.pid(), 45);
        assert_eq!(
            run.next_output().unwrap(),
            Output::Stdout(b"to stdout\n".to_vec())
        );
        assert_eq!(
            run.next_output().unwrap(),
            Output::Stderr(b"to stderr\n".to_vec())
        );
        assert_eq!(run.next_output().unwrap(), Output::Exit(3));
    }

    #[test]
    fn controller_delivers_resize_and_signal_and_next_output_ends_at_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let _vmm = fake_vmm(&path, 0, scripted_guest);
        let agent = Agent::connect(&path, WAIT).unwrap();
        let mut session = agent.exec(&exec(&["wait-signal"])).unwrap();
        let controller = session.controller();
        let other_thread = std::thread::spawn(move || {
            controller.resize(7, 80).unwrap();
            controller.signal(2).unwrap();
        });
        assert_eq!(session.next_output().unwrap(), Output::Exit(128 + 2 + 7));
        other_thread.join().unwrap();
        assert!(matches!(session.next_output(), Err(AgentError::NoStatus { .. })));
        // After the status, the controller has nobody to tell, and says nothing.
        session.controller().signal(9).unwrap();
    }

    #[test]
    fn spawn_failures_carry_their_status_and_a_vanished_guest_is_no_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let _vmm = fake_vmm(&path, 0, scripted_guest);
        let agent = Agent::connect(&path, WAIT).unwrap();
        let err = agent.exec(&exec(&["fail"])).unwrap_err();
        assert_eq!(err.exit_status(), Some(127));
        assert!(err.to_string().contains("command not found"), "{err}");
        let mut session = agent.exec(&exec(&["vanish"])).unwrap();
        let err = session.next_output().unwrap_err();
        assert!(matches!(err, AgentError::NoStatus { .. }), "{err}");
        assert!(err.to_string().contains("vsock.sock"), "{err}");
    }

    #[test]
    fn a_guest_speaking_nonsense_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let _vmm = fake_vmm(&path, 0, |conn| {
            let _ = request_of(&conn);
            (&conn).write_all(&[77, 1, 0, 0, 0, 0]).unwrap();
        });
        let agent = Agent::connect(&path, WAIT).unwrap();
        let err = agent.ping().unwrap_err();
        assert!(matches!(err, AgentError::Protocol { .. }), "{err}");
        assert!(err.to_string().contains("unknown frame kind 77"), "{err}");
    }
}
