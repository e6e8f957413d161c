//! The agent served in this process over socket pairs (no VM, no vsock): each test is a host
//! speaking the protocol to [`Agent::serve`]. Children are reaped directly
//! ([`Children::direct`]): the test process is not PID 1.

use super::*;
use crate::init::reaper::Children;
use sandbox_protocol::agent::{ExitReply, Stats, MAX_FRAME_PAYLOAD};
use serde_json::{json, Value};
use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// Longest any answer may take before a test calls the agent hung.
const HANG: Duration = Duration::from_secs(20);

fn config() -> Config {
    Config {
        workload: None,
        env: vec![
            ("PATH".into(), exec::DEFAULT_PATH.into()),
            ("FROM_WORKLOAD".into(), "yes".into()),
        ],
        workdir: Some("/".into()),
        user: None,
        signal_all: false,
        request_timeout: Duration::from_secs(5),
    }
}

fn agent() -> Agent {
    Agent::new(config(), Arc::new(Children::direct()))
}

/// An agent whose plan starts `argv` on request.
fn agent_with_workload(argv: &[&str], terminal: bool) -> Agent {
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    let c = config();
    let prepared = exec::prepare_command(&argv, &c.env, None, None).unwrap();
    let config = Config {
        workload: Some(RunnableWorkload {
            prepared: Arc::new(prepared),
            terminal,
            size: Some((24, 80)),
        }),
        ..c
    };
    Agent::new(config, Arc::new(Children::direct()))
}

/// A connection to `agent`: the host's end of a socket pair.
fn connect(agent: &Agent) -> UnixStream {
    let (host, guest) = UnixStream::pair().unwrap();
    agent.serve(OwnedFd::from(guest));
    host.set_read_timeout(Some(HANG)).unwrap();
    host
}

fn send(conn: &UnixStream, kind: FrameKind, payload: &[u8]) {
    write_frame(&mut &*conn, kind, payload).unwrap();
}

fn send_json(conn: &UnixStream, value: Value) {
    send(conn, FrameKind::Control, &serde_json::to_vec(&value).unwrap());
}

/// The next frame (panics at the end of the stream or a timeout).
fn next(conn: &UnixStream) -> Frame {
    read_frame(&mut &*conn).unwrap().expect("a frame, not the end")
}

fn next_json(conn: &UnixStream) -> Value {
    let frame = next(conn);
    assert_eq!(frame.kind, FrameKind::Control, "{frame:?}");
    serde_json::from_slice(&frame.payload).unwrap()
}

/// A one-reply request: its answer, then the end of the stream.
fn ask(agent: &Agent, request: Value) -> Value {
    let conn = connect(agent);
    send_json(&conn, request);
    let answer = next_json(&conn);
    assert!(
        read_frame(&mut &conn).unwrap().is_none(),
        "one reply, then the end"
    );
    answer
}

/// What a session sent after its start: stdout, stderr and the status (then the end).
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<i32>,
}

impl Collected {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn collect(conn: &UnixStream) -> Collected {
    let mut out = Collected::default();
    loop {
        let frame = match read_frame(&mut &*conn).unwrap() {
            Some(frame) => frame,
            None => return out,
        };
        assert!(out.exit.is_none(), "nothing after the status: {frame:?}");
        match frame.kind {
            FrameKind::Stdout => out.stdout.extend(frame.payload),
            FrameKind::Stderr => out.stderr.extend(frame.payload),
            FrameKind::Control => {
                let exit: ExitReply = serde_json::from_slice(&frame.payload).unwrap();
                out.exit = Some(exit.exit);
            }
            other => panic!("the guest sent a {other:?} frame"),
        }
    }
}

/// Starts an exec; returns the connection after the `{"ok":true,"pid":N}` answer, and N.
fn start_exec(agent: &Agent, request: Value) -> (UnixStream, i32) {
    let conn = connect(agent);
    let mut request = request;
    request["op"] = "exec".into();
    send_json(&conn, request);
    let started = next_json(&conn);
    assert_eq!(started["ok"], true, "{started}");
    let pid = started["pid"].as_i64().unwrap() as i32;
    (conn, pid)
}

/// Reads stdout until `wanted` appears in it (a terminal's output comes in pieces).
fn read_until(conn: &UnixStream, wanted: &str, seen: &mut String) {
    let start = Instant::now();
    while !seen.contains(wanted) {
        assert!(start.elapsed() < HANG, "no {wanted:?} in {seen:?}");
        let frame = next(conn);
        assert_eq!(frame.kind, FrameKind::Stdout, "{frame:?} after {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&frame.payload));
    }
}

#[test]
fn ping_answers_the_version() {
    assert_eq!(
        ask(&agent(), json!({"op":"ping"})),
        json!({"ok":true,"version":1})
    );
}

#[test]
fn exec_streams_both_outputs_then_the_status() {
    let agent = agent();
    let (conn, pid) = start_exec(
        &agent,
        json!({"argv":["sh","-c","echo out; echo err >&2; echo $FROM_WORKLOAD $EXTRA; pwd; exit 3"],
               "env":[["EXTRA","x"]]}),
    );
    assert!(pid > 0);
    send(&conn, FrameKind::StdinEof, b"");
    let got = collect(&conn);
    assert_eq!(
        got.stdout(),
        "out\nyes x\n/\n",
        "the workload's env and directory, the request's env on top"
    );
    assert_eq!(got.stderr, b"err\n");
    assert_eq!(got.exit, Some(3));
}

#[test]
fn exec_takes_the_requested_directory_and_user() {
    let agent = agent();
    let (conn, _) = start_exec(
        &agent,
        json!({"argv":["sh","-c","pwd; id -u; id -g"],"cwd":"/tmp","user":[4242,4343]}),
    );
    send(&conn, FrameKind::StdinEof, b"");
    let got = collect(&conn);
    assert_eq!(got.exit, Some(0), "{got:?}");
    assert_eq!(got.stdout(), "/tmp\n4242\n4343\n");
}

#[test]
fn stdin_reaches_cat_and_its_end_ends_cat() {
    let agent = agent();
    let (conn, _) = start_exec(&agent, json!({"argv":["cat"]}));
    send(&conn, FrameKind::Stdin, b"hello ");
    send(&conn, FrameKind::Stdin, &vec![b'x'; 300_000]);
    send(&conn, FrameKind::Stdin, b" bye\n");
    send(&conn, FrameKind::StdinEof, b"");
    let got = collect(&conn);
    assert_eq!(got.exit, Some(0));
    assert_eq!(got.stdout.len(), 6 + 300_000 + 5);
    assert!(got.stdout.starts_with(b"hello x") && got.stdout.ends_with(b"x bye\n"));
}

#[test]
fn not_found_is_127_and_not_executable_is_126() {
    let agent = agent();
    let answer = ask(&agent, json!({"op":"exec","argv":["no-such-command-xyz"]}));
    assert_eq!(answer["exit"], 127, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("no-such-command-xyz: command not found"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-executable");
    std::fs::write(&file, "#!/bin/sh\necho never\n").unwrap();
    let answer = ask(&agent, json!({"op":"exec","argv":[file.to_str().unwrap()]}));
    assert_eq!(answer["exit"], 126, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("cannot be executed"),
        "{answer}"
    );

    let answer = ask(&agent, json!({"op":"exec","argv":["true"],"cwd":"/no/such/dir"}));
    assert_eq!(answer["exit"], 1, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("/no/such/dir"),
        "{answer}"
    );

    let answer = ask(&agent, json!({"op":"exec","argv":[]}));
    assert!(
        answer["error"].as_str().unwrap().contains("argv is empty"),
        "{answer}"
    );
    // A file without #! runs with the shell, as execvp does.
    let script = dir.path().join("plain-script");
    std::fs::write(&script, "echo from-sh\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (conn, _) = start_exec(&agent, json!({"argv":[script.to_str().unwrap()]}));
    let got = collect(&conn);
    assert_eq!((got.stdout(), got.exit), ("from-sh\n".to_string(), Some(0)));
}

#[test]
fn a_signal_frame_reaches_a_running_exec() {
    let agent = agent();
    let (conn, _) = start_exec(&agent, json!({"argv":["sh","-c","echo started; exec sleep 100"]}));
    let mut seen = String::new();
    read_until(&conn, "started\n", &mut seen);
    send_json(&conn, json!({"op":"signal","signal":15}));
    let got = collect(&conn);
    assert_eq!(got.exit, Some(128 + 15));
}

#[test]
fn a_terminal_exec_is_sized_and_resized() {
    let agent = agent();
    let (conn, _) = start_exec(
        &agent,
        json!({"argv":["sh","-c","stty size; tty; read line; stty size; echo got:$line"],
               "terminal":true,"size":[24,80]}),
    );
    let mut seen = String::new();
    read_until(&conn, "24 80", &mut seen);
    read_until(&conn, "/dev/pts/", &mut seen);
    send_json(&conn, json!({"op":"resize","rows":40,"cols":100}));
    send(&conn, FrameKind::Stdin, b"typed\n");
    let got = collect(&conn);
    let all = seen + &got.stdout();
    assert!(all.contains("40 100"), "{all:?}");
    assert!(all.contains("got:typed"), "{all:?}");
    assert!(got.stderr.is_empty(), "a terminal has one output");
    assert_eq!(got.exit, Some(0), "{all:?}");
}

#[test]
fn a_terminals_stdin_eof_is_its_eof_character() {
    let agent = agent();
    let (conn, _) = start_exec(&agent, json!({"argv":["cat"],"terminal":true}));
    send(&conn, FrameKind::Stdin, b"line\n");
    send(&conn, FrameKind::StdinEof, b"");
    let got = collect(&conn);
    assert_eq!(got.exit, Some(0), "{got:?}");
}

#[test]
fn a_host_that_goes_away_hangs_up_a_terminal_exec() {
    let agent = agent();
    let (conn, pid) = start_exec(&agent, json!({"argv":["sleep","100"],"terminal":true}));
    drop(conn);
    let start = Instant::now();
    // SAFETY: kill with signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(start.elapsed() < HANG, "sleep was not hung up");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.wait_sessions(HANG), "the session ends");
}

#[test]
fn exec_signal_stats_and_ps_are_served_concurrently() {
    let agent = agent_with_workload(&["sleep", "100"], false);
    let run = connect(&agent);
    send_json(&run, json!({"op":"run"}));
    let workload_pid = next_json(&run)["pid"].as_i64().unwrap();
    // An exec that streams without end, and one that blocks on stdin.
    let (streaming, _) = start_exec(
        &agent,
        json!({"argv":["sh","-c","while :; do echo tick; sleep 0.01; done"]}),
    );
    let (blocked, _) = start_exec(&agent, json!({"argv":["cat"]}));
    let mut seen = String::new();
    read_until(&streaming, "tick\ntick\n", &mut seen);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let agent = agent.clone();
            std::thread::spawn(move || match i % 4 {
                0 => {
                    let stats: Stats = serde_json::from_value(ask(&agent, json!({"op":"stats"}))).unwrap();
                    assert!(stats.memory_total_bytes >= stats.memory_available_bytes);
                    assert_eq!(
                        stats.memory_used_bytes,
                        stats.memory_total_bytes - stats.memory_available_bytes
                    );
                    assert!(stats.pids > 1 && stats.uptime_seconds > 0.0);
                }
                1 => {
                    let list: ProcessList = serde_json::from_value(ask(&agent, json!({"op":"ps"}))).unwrap();
                    let me = std::process::id() as i32;
                    assert!(
                        list.processes.iter().any(|p| p.pid == me),
                        "ps lists this process"
                    );
                    assert!(list.processes.windows(2).all(|w| w[0].pid < w[1].pid));
                }
                2 => assert_eq!(ask(&agent, json!({"op":"ping"}))["version"], 1),
                _ => {}
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The streaming exec still streams, and a signal to the workload is answered meanwhile.
    read_until(&streaming, "tick\ntick\ntick\n", &mut seen);
    assert_eq!(
        ask(&agent, json!({"op":"signal","signal":15})),
        json!({"ok":true})
    );
    let got = collect(&run);
    assert_eq!(got.exit, Some(128 + 15));
    assert!(workload_pid > 0);
    assert_eq!(agent.children().workload_status(), Some(143));
    for conn in [&streaming, &blocked] {
        send_json(conn, json!({"op":"signal","signal":9}));
        assert_eq!(collect(conn).exit, Some(128 + 9));
    }
    drop((run, streaming, blocked));
    assert!(agent.wait_sessions(HANG));
}

#[test]
fn run_starts_the_workload_once() {
    let agent = agent_with_workload(&["sh", "-c", "read x; echo workload:$x; exit 5"], false);
    let answer = ask(&agent, json!({"op":"signal","signal":15}));
    assert!(
        answer["error"].as_str().unwrap().contains("send run first"),
        "{answer}"
    );
    let run = connect(&agent);
    send_json(&run, json!({"op":"run"}));
    assert_eq!(next_json(&run)["ok"], true);
    let again = ask(&agent, json!({"op":"run"}));
    assert!(
        again["error"].as_str().unwrap().contains("already started"),
        "{again}"
    );
    send(&run, FrameKind::Stdin, b"in\n");
    let got = collect(&run);
    assert_eq!((got.stdout(), got.exit), ("workload:in\n".to_string(), Some(5)));
    assert_eq!(agent.children().workload_status(), Some(5));
    let again = ask(&agent, json!({"op":"run"}));
    assert!(
        again["error"].as_str().unwrap().contains("already started"),
        "{again}"
    );
    let ended = ask(&agent, json!({"op":"signal","signal":15}));
    assert!(
        ended["error"].as_str().unwrap().contains("ended (status 5)"),
        "{ended}"
    );
    // Once the workload has ended, the sandbox is going down: nothing new starts.
    let late = ask(&agent, json!({"op":"exec","argv":["true"]}));
    assert!(
        late["error"].as_str().unwrap().contains("shutting down"),
        "{late}"
    );
}

#[test]
fn run_of_a_missing_workload_reports_127_and_ends_it() {
    let agent = agent_with_workload(&["no-such-workload-xyz"], false);
    let answer = ask(&agent, json!({"op":"run"}));
    assert_eq!(answer["exit"], 127, "{answer}");
    assert_eq!(agent.children().workload_status(), Some(127));
}

#[test]
fn run_with_a_terminal() {
    let agent = agent_with_workload(&["sh", "-c", "stty size; test -t 0 && echo tty"], true);
    let run = connect(&agent);
    send_json(&run, json!({"op":"run"}));
    assert_eq!(next_json(&run)["ok"], true);
    let got = collect(&run);
    assert_eq!(got.exit, Some(0));
    assert!(
        got.stdout().contains("24 80") && got.stdout().contains("tty"),
        "{got:?}"
    );
}

#[test]
fn run_and_signal_all_are_refused_where_they_do_not_apply() {
    let agent = agent();
    let answer = ask(&agent, json!({"op":"run"}));
    assert!(
        answer["error"].as_str().unwrap().contains("starts at boot"),
        "{answer}"
    );
    let answer = ask(&agent, json!({"op":"signal","signal":15,"all":true}));
    assert!(answer["error"].as_str().unwrap().contains("PID 1"), "{answer}");
    for bad in [0, -1, 65, 1000] {
        let answer = ask(&agent, json!({"op":"signal","signal":bad}));
        assert!(answer["error"].as_str().unwrap().contains("1 to 64"), "{answer}");
    }
    let answer = ask(&agent, json!({"op":"signal","signal":15}));
    assert!(
        answer["error"].as_str().unwrap().contains("not running"),
        "{answer}"
    );
}

#[test]
fn garbage_from_the_host_gets_an_error_and_the_agent_goes_on() {
    let agent = agent();
    let error_for = |bytes: &[u8]| -> String {
        let conn = connect(&agent);
        (&conn).write_all(bytes).unwrap();
        let answer = next_json(&conn);
        answer["error"].as_str().unwrap_or_default().to_string()
    };
    assert!(error_for(b"GET / HTTP/1.1\r\n\r\n").contains("unknown frame kind 71"));
    let mut huge = vec![1];
    huge.extend(((MAX_FRAME_PAYLOAD + 1) as u32).to_le_bytes());
    assert!(error_for(&huge).contains("larger than"));
    assert!(error_for(&[1, 0xff, 0xff, 0xff, 0xff]).contains("larger than"));
    assert!(error_for(&[2, 1, 0, 0, 0, b'x']).contains("first frame must be a control frame"));
    let frame = |payload: &[u8]| {
        let mut out = Vec::new();
        write_frame(&mut out, FrameKind::Control, payload).unwrap();
        out
    };
    let error = error_for(&frame(br#"{"op":"format-disk"}"#));
    assert!(
        error.contains("\"format-disk\"") && error.contains("ping, exec, run, signal, stats, ps"),
        "{error}"
    );
    assert!(error_for(&frame(b"\xff\xfe{{{")).contains("not JSON"));
    assert!(error_for(&frame(br#"{"op":"exec","argv":"sh"}"#)).contains("bad \"exec\" request"));
    assert!(error_for(&frame(br#"{"op":"signal"}"#)).contains("bad \"signal\" request"));
    assert!(
        error_for(&frame(&[b'['; 10_000])).contains("not JSON"),
        "deep nesting is refused"
    );
    assert!(error_for(&frame(br#"{"op":"resize","rows":1,"cols":1}"#)).contains("unknown op"));
    // A header cut short, then the host gone.
    let conn = connect(&agent);
    (&conn).write_all(&[1, 5, 0]).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let answer = next_json(&conn);
    assert!(
        answer["error"].as_str().unwrap().contains("ended inside a frame"),
        "{answer}"
    );
    // Hosts that connect and leave at once.
    for _ in 0..20 {
        drop(connect(&agent));
    }
    // Garbage during a session: the session goes on, and ends with its status.
    let (conn, _) = start_exec(&agent, json!({"argv":["sh","-c","sleep 0.2; echo done"]}));
    send(&conn, FrameKind::Control, b"nonsense");
    send_json(&conn, json!({"op":"ps"}));
    send(&conn, FrameKind::Stdout, b"not from a host");
    (&conn).write_all(&[9, 9, 9, 9, 9, 9]).unwrap();
    let got = collect(&conn);
    assert_eq!((got.stdout(), got.exit), ("done\n".to_string(), Some(0)));
    assert_eq!(ask(&agent, json!({"op":"ping"}))["ok"], true, "still serving");
}

#[test]
fn a_silent_host_is_cut_off() {
    let agent = Agent::new(
        Config {
            request_timeout: Duration::from_millis(200),
            ..config()
        },
        Arc::new(Children::direct()),
    );
    let conn = connect(&agent);
    let answer = next_json(&conn);
    assert!(
        answer["error"].as_str().unwrap().contains("bad request frame"),
        "{answer}"
    );
    assert_eq!(ask(&agent, json!({"op":"ping"}))["ok"], true);
}

#[test]
fn the_accept_loop_serves_a_listening_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let agent = agent();
    agent.accept_on_thread(OwnedFd::from(listener)).unwrap();
    for _ in 0..3 {
        let conn = UnixStream::connect(&path).unwrap();
        conn.set_read_timeout(Some(HANG)).unwrap();
        send_json(&conn, json!({"op":"ping"}));
        assert_eq!(next_json(&conn)["version"], 1);
    }
}

#[test]
fn the_registry_delivers_reaped_statuses_to_waiters() {
    // As in init: a reaper (here a thread waiting for that one child) delivers the status.
    let children = Arc::new(Children::for_init());
    let prepared =
        exec::prepare_command(&["sh".into(), "-c".into(), "exit 7".into()], &[], None, None).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let fd = null.as_raw_fd();
    let pid = children
        .spawn(|| exec::spawn_with(&prepared, exec::ChildIo::Fds([fd, fd, fd]), None))
        .unwrap();
    let reaper = {
        let children = children.clone();
        std::thread::spawn(move || {
            let status = nix::sys::wait::waitpid(pid, None).unwrap();
            children.reaped(pid, crate::init::reaper::status_code(status).unwrap());
        })
    };
    assert_eq!(children.wait(pid), 7);
    reaper.join().unwrap();
    assert_eq!(
        children.signal(pid, 15),
        Ok(false),
        "a reaped child is never signalled"
    );
}

#[test]
fn only_the_host_may_connect_over_vsock() {
    // SAFETY: all-zero sockaddr_storage and sockaddr_vm are valid values.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut vm: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    vm.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    for (cid, allowed) in [
        (libc::VMADDR_CID_HOST, true),
        (libc::VMADDR_CID_LOCAL, false),
        (3, false),
    ] {
        vm.svm_cid = cid;
        // SAFETY: a sockaddr_vm fits in a sockaddr_storage.
        unsafe { std::ptr::write((&mut peer as *mut libc::sockaddr_storage).cast(), vm) };
        assert_eq!(from_the_host(&peer), allowed, "CID {cid}");
    }
}
