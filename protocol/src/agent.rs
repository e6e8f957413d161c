//! The guest agent's protocol (version [`VERSION`]): how a host process talks to the agent that
//! a VM's init runs, defined once for both ends (the agent in `sandbox-guest`'s init, the
//! client in `sandbox-core`).
//!
//! # Transport
//! The agent listens on AF_VSOCK, any CID, port [`AGENT_PORT`]. A host process reaches it the
//! Firecracker way: it connects to the VM's unix socket (`<sandbox dir>/vsock.sock`), writes
//! `CONNECT 1024\n`, and reads back `OK <n>\n`; from then on the unix stream is a byte stream to
//! the guest's accepted socket. Everything below is that byte stream, the same on both ends.
//!
//! # Frames
//! `[kind: u8][len: u32, little-endian][len bytes of payload]`, `len` ≤ [`MAX_FRAME_PAYLOAD`]
//! (1 MiB; a larger one is refused before anything is allocated). Kinds ([`FrameKind`]):
//!
//! | kind | name        | payload                    | direction     |
//! |------|-------------|----------------------------|---------------|
//! | 1    | `CONTROL`   | one JSON object            | both          |
//! | 2    | `STDIN`     | raw bytes for the process  | host → guest  |
//! | 3    | `STDOUT`    | raw bytes from the process | guest → host  |
//! | 4    | `STDERR`    | raw bytes from the process | guest → host  |
//! | 5    | `STDIN_EOF` | empty (`len` 0)            | host → guest  |
//!
//! An unknown kind, a `STDIN_EOF` with a payload, or a header cut short is a [`FrameError`].
//!
//! # Requests
//! One request per connection: the host's first frame, a `CONTROL` frame holding a
//! [`Request`]. Any other first frame, bad JSON or an unknown `op` gets
//! `{"error":"..."}` (naming the op and the known ones) and the connection is closed.
//!
//! - `{"op":"ping"}` → `{"ok":true,"version":1}`.
//! - `{"op":"exec","argv":[..],"env":[[k,v],..],"cwd":s|null,"user":[uid,gid]|null,
//!   "terminal":bool,"size":[rows,cols]|null}` ([`ExecRequest`]): the guest starts the process
//!   in the VM's root with the workload's environment (the request's `env` on top), working
//!   directory and user unless given, and the workload's PATH search. Then:
//!   - spawn failed: `{"error":"...","exit":127}` (not found) or `126` (not executable), and
//!     the connection closes;
//!   - started: `{"ok":true,"pid":N}` (the guest pid), then the session: the host sends
//!     `STDIN` / `STDIN_EOF` (→ the process's stdin; with a terminal, `STDIN_EOF` sends the
//!     terminal's end-of-file character when it is in canonical mode) and may send
//!     `{"op":"signal","signal":N}` (→ the process) and, with a terminal,
//!     `{"op":"resize","rows":R,"cols":C}` control frames at any time; the guest sends `STDOUT`
//!     and `STDERR` (a terminal: `STDOUT` only), then, after all output, `{"exit":status}`
//!     (shell convention: 128 + N for signal N), and closes its side. The host then closes
//!     its side: that tells the guest the status was received.
//! - `{"op":"run"}`: for a plan started `on_request` ([`crate::StartMode`]): starts the
//!   workload the plan names, with its stdio over this connection exactly like `exec` (a
//!   terminal when the plan's `process.terminal`, sized `process.console_size`); its status
//!   ends the VM as a boot-started workload's would. Once only: a second `run`, or `run` for a
//!   plan started at boot, gets `{"error":...}`.
//! - `{"op":"signal","signal":N,"all":bool}` → signal N to the workload, or with `all` to every
//!   process but init → `{"ok":true}`.
//! - `{"op":"stats"}` → [`Stats`]: `{"memory_total_bytes":..,"memory_available_bytes":..,
//!   "memory_used_bytes":..,"pids":N,"load":f,"uptime_seconds":f}` from the guest's /proc.
//! - `{"op":"ps"}` → [`ProcessList`]: `{"processes":[{"pid":..,"ppid":..,"comm":..,
//!   "state":..},..]}`.
//!
//! A reply that has `"error"` is a refusal (its `"exit"`, when present, is the status a CLI
//! should end with).

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// The vsock port the guest agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// This protocol's version, as `ping` reports it.
pub const VERSION: u32 = 1;
/// The largest payload a frame may carry (1 MiB).
pub const MAX_FRAME_PAYLOAD: usize = 1 << 20;
/// The size of a frame header: kind and length.
pub const HEADER_LEN: usize = 5;
/// The name of the VM's vsock unix socket in its sandbox directory.
pub const VSOCK_SOCKET_NAME: &str = "vsock.sock";
/// The operations a first `CONTROL` frame may name.
pub const OPS: [&str; 6] = ["ping", "exec", "run", "signal", "stats", "ps"];
/// The operations a `CONTROL` frame may name during an exec or run session.
pub const SESSION_OPS: [&str; 2] = ["signal", "resize"];

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// One JSON object: a request, a reply, or a session's control message.
    Control = 1,
    /// Bytes for the process's stdin (host → guest).
    Stdin = 2,
    /// Bytes the process wrote to stdout (guest → host); a terminal's output.
    Stdout = 3,
    /// Bytes the process wrote to stderr (guest → host).
    Stderr = 4,
    /// The end of the process's stdin (host → guest); no payload.
    StdinEof = 5,
}

impl FrameKind {
    /// The kind with wire value `byte`.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Control,
            2 => FrameKind::Stdin,
            3 => FrameKind::Stdout,
            4 => FrameKind::Stderr,
            5 => FrameKind::StdinEof,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A `CONTROL` frame holding `value` as JSON.
    pub fn control<T: Serialize>(value: &T) -> Frame {
        Frame {
            kind: FrameKind::Control,
            payload: serde_json::to_vec(value).expect("protocol values always serialize"),
        }
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is larger than the {MAX_FRAME_PAYLOAD}-byte limit")]
    TooLarge { len: usize },
    #[error("unknown frame kind {0} (known: 1 control, 2 stdin, 3 stdout, 4 stderr, 5 stdin-eof)")]
    UnknownKind(u8),
    #[error("stdin-eof frame with a {0}-byte payload (it must be empty)")]
    EofWithPayload(usize),
    #[error("the stream ended inside a frame ({got} of {wanted} bytes)")]
    Truncated { got: usize, wanted: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes one frame as a single `write_all` (frames from several threads sharing a locked
/// writer never interleave).
pub fn write_frame(w: &mut impl Write, kind: FrameKind, payload: &[u8]) -> Result<(), FrameError> {
    if payload.len() > MAX_FRAME_PAYLOAD {
        return Err(FrameError::TooLarge { len: payload.len() });
    }
    if kind == FrameKind::StdinEof && !payload.is_empty() {
        return Err(FrameError::EofWithPayload(payload.len()));
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.push(kind as u8);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    Ok(())
}

/// Reads exactly `buf.len()` bytes; returns how many arrived before the end of the stream.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one frame; `None` when the stream ends cleanly between frames. The header is checked
/// (kind, length limit) before the payload buffer is allocated.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated {
            got,
            wanted: HEADER_LEN,
        });
    }
    let kind = FrameKind::from_byte(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::TooLarge { len });
    }
    if kind == FrameKind::StdinEof && len != 0 {
        return Err(FrameError::EofWithPayload(len));
    }
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(FrameError::Truncated { got, wanted: len });
    }
    Ok(Some(Frame { kind, payload }))
}

/// A request: the first `CONTROL` frame of a connection, or (`signal`, `resize`) a control
/// message during a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Ping,
    Exec(ExecRequest),
    Run,
    Signal {
        signal: i32,
        /// Every process but init instead of the workload (not during a session).
        #[serde(default)]
        all: bool,
    },
    Resize {
        rows: u16,
        cols: u16,
    },
    Stats,
    Ps,
}

impl Request {
    /// The `op` name.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Exec(_) => "exec",
            Request::Run => "run",
            Request::Signal { .. } => "signal",
            Request::Resize { .. } => "resize",
            Request::Stats => "stats",
            Request::Ps => "ps",
        }
    }

    /// Parses a `CONTROL` payload; the error is the message for an `{"error":...}` reply,
    /// naming the op and the ones `known`.
    pub fn parse(payload: &[u8], known: &[&str]) -> Result<Request, String> {
        let known_list = known.join(", ");
        let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
            format!("the request is not JSON ({e}): send {{\"op\":...}} with op one of {known_list}")
        })?;
        let op = match value.get("op") {
            Some(serde_json::Value::String(op)) => op.clone(),
            _ => {
                return Err(format!(
                    "the request has no \"op\" string: send {{\"op\":...}} with op one of {known_list}"
                ))
            }
        };
        if !known.contains(&op.as_str()) {
            return Err(format!("unknown op {op:?}: the known ops here are {known_list}"));
        }
        serde_json::from_value(value).map_err(|e| format!("bad {op:?} request: {e}"))
    }
}

/// What `exec` starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The command and its arguments; the program is searched in PATH like the workload's.
    pub argv: Vec<String>,
    /// Environment variables set on top of the workload's.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The working directory; `null` is the workload's.
    #[serde(default)]
    pub cwd: Option<String>,
    /// `(uid, gid)`; `null` is the workload's user.
    #[serde(default)]
    pub user: Option<(u32, u32)>,
    /// A pseudo-terminal as stdin, stdout and stderr (and controlling terminal).
    #[serde(default)]
    pub terminal: bool,
    /// The terminal's `(rows, cols)`.
    #[serde(default)]
    pub size: Option<(u16, u16)>,
}

/// `ping`'s answer, and `{"ok":true}` (no version) for `signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The guest pid of a process `exec` or `run` started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

/// A refusal or failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
    /// For a spawn that failed: 127 (not found) or 126 (not executable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
}

impl ErrorReply {
    pub fn new(error: impl Into<String>) -> ErrorReply {
        ErrorReply {
            error: error.into(),
            exit: None,
        }
    }

    /// The refusal in `payload`, if it is one (has an `"error"` string).
    pub fn from_payload(payload: &[u8]) -> Option<ErrorReply> {
        serde_json::from_slice::<ErrorReply>(payload).ok()
    }
}

/// A session's last frame: the process's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReply {
    /// The exit code, or 128 + N for a process killed by signal N.
    pub exit: i32,
}

/// `stats`' answer: the guest's memory, process count, load and uptime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_used_bytes: u64,
    /// Processes (not threads) in the guest, init included.
    pub pids: u64,
    /// The 1-minute load average.
    pub load: f64,
    pub uptime_seconds: f64,
}

/// One process in `ps`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    /// The command name (`/proc/PID/comm`, at most 15 bytes).
    pub comm: String,
    /// The one-letter state (`R`, `S`, `D`, `Z`, ...).
    pub state: String,
}

/// `ps`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    pub processes: Vec<Process>,
}

/// Parses `/proc/meminfo`, `/proc/loadavg` and `/proc/uptime` into [`Stats`] (`pids` given).
pub fn parse_stats(meminfo: &str, loadavg: &str, uptime: &str, pids: u64) -> Option<Stats> {
    let kib = |key: &str| -> Option<u64> {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
                .map(|v| v * 1024)
        })
    };
    let total = kib("MemTotal")?;
    let available = kib("MemAvailable").or_else(|| kib("MemFree"))?;
    Some(Stats {
        memory_total_bytes: total,
        memory_available_bytes: available,
        memory_used_bytes: total.saturating_sub(available),
        pids,
        load: loadavg.split_whitespace().next()?.parse().ok()?,
        uptime_seconds: uptime.split_whitespace().next()?.parse().ok()?,
    })
}

/// Parses one `/proc/PID/stat` line (the command name may hold spaces and parentheses: it
/// ends at the last `)`).
pub fn parse_proc_stat(stat: &str) -> Option<Process> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = stat[..open].trim().parse().ok()?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.to_string();
    let ppid = rest.next()?.parse().ok()?;
    Some(Process {
        pid,
        ppid,
        comm,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, kind, payload).unwrap();
        out
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut stream = Vec::new();
        let frames = [
            (FrameKind::Control, br#"{"op":"ping"}"#.to_vec()),
            (FrameKind::Stdin, vec![0, 1, 2, 255]),
            (FrameKind::Stdout, vec![]),
            (FrameKind::Stderr, vec![7; 1000]),
            (FrameKind::StdinEof, vec![]),
            (FrameKind::Stdout, vec![9; MAX_FRAME_PAYLOAD]),
        ];
        for (kind, payload) in &frames {
            stream.extend(encode(*kind, payload));
        }
        assert_eq!(
            &stream[..5],
            &[1, 13, 0, 0, 0],
            "kind, then the length little-endian"
        );
        let mut r = Cursor::new(stream);
        for (kind, payload) in frames {
            let frame = read_frame(&mut r).unwrap().unwrap();
            assert_eq!((frame.kind, frame.payload), (kind, payload));
        }
        assert!(
            read_frame(&mut r).unwrap().is_none(),
            "a clean end between frames"
        );
    }

    #[test]
    fn limits_are_enforced_both_ways() {
        let big = vec![0u8; MAX_FRAME_PAYLOAD + 1];
        assert!(matches!(
            write_frame(&mut Vec::new(), FrameKind::Stdout, &big),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            write_frame(&mut Vec::new(), FrameKind::StdinEof, b"x"),
            Err(FrameError::EofWithPayload(1))
        ));
        // A header claiming 4 GiB is refused from the header alone: no payload follows.
        let mut r = Cursor::new(vec![3, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(read_frame(&mut r), Err(FrameError::TooLarge { len }) if len == u32::MAX as usize));
        let mut header = vec![3];
        header.extend(((MAX_FRAME_PAYLOAD + 1) as u32).to_le_bytes());
        assert!(matches!(
            read_frame(&mut Cursor::new(header)),
            Err(FrameError::TooLarge { .. })
        ));
        let mut r = Cursor::new(vec![5, 1, 0, 0, 0, b'x']);
        assert!(matches!(read_frame(&mut r), Err(FrameError::EofWithPayload(1))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            read_frame(&mut Cursor::new(b"GET / HTTP/1.1\r\n".to_vec())),
            Err(FrameError::UnknownKind(b'G'))
        ));
        assert!(matches!(
            read_frame(&mut Cursor::new(vec![0, 0, 0, 0, 0])),
            Err(FrameError::UnknownKind(0))
        ));
        assert!(matches!(
            read_frame(&mut Cursor::new(vec![1, 0, 0])),
            Err(FrameError::Truncated { got: 3, wanted: 5 })
        ));
        assert!(matches!(
            read_frame(&mut Cursor::new(vec![2, 10, 0, 0, 0, 1, 2])),
            Err(FrameError::Truncated { got: 2, wanted: 10 })
        ));
        // Random streams, half of them starting like a plausible frame: each read ends in a
        // frame, the end, or an error — never a panic, never more than the stream holds.
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..5000 {
            let len = (next() % 48) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= HEADER_LEN && next() % 2 == 0 {
                bytes[0] = (next() % 6) as u8;
                bytes[1..5].copy_from_slice(&(next() % 64).to_le_bytes());
            }
            let mut r = Cursor::new(bytes);
            let mut frames = 0;
            while let Ok(Some(_)) = read_frame(&mut r) {
                frames += 1;
                assert!(frames <= len / HEADER_LEN, "frames out of nothing");
            }
        }
    }

    #[test]
    fn requests_parse_and_errors_name_the_op_and_the_known_ones() {
        assert_eq!(Request::parse(br#"{"op":"ping"}"#, &OPS), Ok(Request::Ping));
        let exec = Request::parse(
            br#"{"op":"exec","argv":["ls","-l"],"env":[["A","1"]],"cwd":"/tmp","user":[1000,100],"terminal":true,"size":[24,80]}"#,
            &OPS,
        )
        .unwrap();
        assert_eq!(
            exec,
            Request::Exec(ExecRequest {
                argv: vec!["ls".into(), "-l".into()],
                env: vec![("A".into(), "1".into())],
                cwd: Some("/tmp".into()),
                user: Some((1000, 100)),
                terminal: true,
                size: Some((24, 80)),
            })
        );
        let minimal = Request::parse(br#"{"op":"exec","argv":["true"]}"#, &OPS).unwrap();
        assert!(matches!(
            minimal,
            Request::Exec(ExecRequest {
                terminal: false,
                user: None,
                ..
            })
        ));
        assert_eq!(
            Request::parse(br#"{"op":"signal","signal":15}"#, &OPS),
            Ok(Request::Signal {
                signal: 15,
                all: false
            })
        );
        let err = Request::parse(br#"{"op":"reboot"}"#, &OPS).unwrap_err();
        assert!(
            err.contains("\"reboot\"") && err.contains("ping, exec, run, signal, stats, ps"),
            "{err}"
        );
        let err = Request::parse(br#"{"op":"resize","rows":1,"cols":2}"#, &OPS).unwrap_err();
        assert!(
            err.contains("unknown op \"resize\""),
            "resize is only for sessions: {err}"
        );
        let err = Request::parse(b"{not json", &OPS).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let err = Request::parse(b"[1,2]", &OPS).unwrap_err();
        assert!(err.contains("no \"op\""), "{err}");
        let err = Request::parse(br#"{"op":"exec"}"#, &OPS).unwrap_err();
        assert!(
            err.contains("bad \"exec\" request") && err.contains("argv"),
            "{err}"
        );
        // Each request serializes to what parses back.
        for req in [
            Request::Run,
            Request::Stats,
            Request::Ps,
            Request::Resize { rows: 3, cols: 4 },
        ] {
            let bytes = serde_json::to_vec(&req).unwrap();
            assert_eq!(Request::parse(&bytes, &["run", "stats", "ps", "resize"]), Ok(req));
        }
    }

    #[test]
    fn replies_have_the_documented_shape() {
        let ping = OkReply {
            ok: true,
            version: Some(VERSION),
            pid: None,
        };
        assert_eq!(
            serde_json::to_string(&ping).unwrap(),
            r#"{"ok":true,"version":1}"#
        );
        let spawn = ErrorReply {
            error: "x: not found".into(),
            exit: Some(127),
        };
        assert_eq!(
            serde_json::to_string(&spawn).unwrap(),
            r#"{"error":"x: not found","exit":127}"#
        );
        assert_eq!(
            serde_json::to_string(&ExitReply { exit: 143 }).unwrap(),
            r#"{"exit":143}"#
        );
        assert!(ErrorReply::from_payload(br#"{"exit":0}"#).is_none());
        assert!(ErrorReply::from_payload(br#"{"error":"no"}"#).is_some());
    }

    #[test]
    fn proc_files_parse() {
        let meminfo = "MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     600 kB\n";
        let stats = parse_stats(meminfo, "0.25 0.10 0.05 1/80 123\n", "12.50 20.00\n", 7).unwrap();
        assert_eq!(stats.memory_total_bytes, 1000 * 1024);
        assert_eq!(stats.memory_available_bytes, 600 * 1024);
        assert_eq!(stats.memory_used_bytes, 400 * 1024);
        assert_eq!((stats.pids, stats.load, stats.uptime_seconds), (7, 0.25, 12.5));
        assert!(parse_stats("", "", "", 0).is_none());
        let p = parse_proc_stat("42 (a (b) c) S 1 42 42 0 -1").unwrap();
        assert_eq!(
            (p.pid, p.ppid, p.comm.as_str(), p.state.as_str()),
            (42, 1, "a (b) c", "S")
        );
        assert!(parse_proc_stat("garbage").is_none());
        assert!(parse_proc_stat(")( x").is_none());
    }
}
