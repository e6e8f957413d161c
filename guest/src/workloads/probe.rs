//! `probe`: tries, from inside a sandbox, one thing an attacker would try, and reports whether
//! the kernel allowed it. Each probe prints one JSON line: what was tried, `"allowed"`, and the
//! errno when refused. A probe that ran exits 0 whatever the answer; the answer is the result.
//!
//! `docs/security.md` lists what each mode isolates with the probe that shows it, and the tests
//! run the same probes: a device node opened, terminal input injected, a signal to the whole
//! process group, the session the workload runs in, and the syscalls the default seccomp
//! profile refuses.

use super::args::Flags;
use super::WorkloadError;
use nix::errno::Errno;
use serde_json::{json, Map, Value};
use std::ffi::CString;

/// The probes, with their arguments and what each shows.
pub const PROBES: &[(&str, &str, &str)] = &[
    (
        "open",
        "--path P",
        "open P read-write (a device node: does the device allowlist refuse it?)",
    ),
    (
        "mknod",
        "--path P --dev c|b:MAJOR:MINOR",
        "create a device node at P, then open it",
    ),
    (
        "tiocsti",
        "[--fd N]",
        "push one byte into the input of the terminal on descriptor N (default 0) (TIOCSTI)",
    ),
    (
        "session",
        "",
        "this process's pid, parent, session and process group",
    ),
    (
        "kill-group",
        "--signal N",
        "send signal N to this process group (kill(0, N)); the probe itself ignores it",
    ),
    (
        "syscalls",
        "",
        "io_uring, AF_VSOCK, personality, x32 and unknown numbers, clone with a namespace flag",
    ),
];

/// Runs the probe named by `args[0]`.
pub fn run(args: &[String]) -> Result<Value, WorkloadError> {
    let Some(name) = args.first() else {
        return Err(WorkloadError::Usage("probe: name a probe".into()));
    };
    let rest = &args[1..];
    let flags = |allowed: &[&str]| Flags::parse(&format!("probe {name}"), rest, allowed);
    match name.as_str() {
        "open" => {
            let f = flags(&["path"])?;
            Ok(open(f.required("path")?))
        }
        "mknod" => {
            let f = flags(&["path", "dev"])?;
            mknod(f.required("path")?, f.required("dev")?)
        }
        "tiocsti" => {
            let f = flags(&["fd"])?;
            let fd = match f.get("fd") {
                None => 0,
                Some(v) => v.parse::<i32>().ok().filter(|fd| *fd >= 0).ok_or_else(|| {
                    WorkloadError::Usage(format!("probe tiocsti: --fd {v:?} is not a descriptor number"))
                })?,
            };
            Ok(tiocsti(fd))
        }
        "session" => flags(&[]).map(|_| session()),
        "kill-group" => {
            let f = flags(&["signal"])?;
            let signal = f.positive("signal", None)?;
            kill_group(signal)
        }
        "syscalls" => flags(&[]).map(|_| syscalls()),
        other => Err(WorkloadError::Usage(format!("probe: unknown probe {other:?}"))),
    }
}

/// `{"allowed": true}` or `{"allowed": false, "errno": "EPERM"}` from a raw syscall's result.
fn outcome(rc: libc::c_long) -> Map<String, Value> {
    let mut m = Map::new();
    if rc < 0 {
        m.insert("allowed".into(), json!(false));
        m.insert("errno".into(), json!(format!("{:?}", Errno::last())));
    } else {
        m.insert("allowed".into(), json!(true));
    }
    m
}

fn with(mut m: Map<String, Value>, fields: Value) -> Value {
    if let Value::Object(extra) = fields {
        m.extend(extra);
    }
    Value::Object(m)
}

fn open(path: &str) -> Value {
    let result = match CString::new(path) {
        // SAFETY: open reads the NUL-terminated path; the descriptor is closed right after.
        Ok(c) => libc::c_long::from(unsafe {
            libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC)
        }),
        Err(_) => {
            Errno::set_raw(libc::EINVAL);
            -1
        }
    };
    if result >= 0 {
        // SAFETY: closes the descriptor just opened.
        unsafe { libc::close(result as i32) };
    }
    with(outcome(result), json!({"probe": "open", "path": path}))
}

fn mknod(path: &str, dev: &str) -> Result<Value, WorkloadError> {
    let bad = || {
        WorkloadError::Usage(format!(
            "probe mknod: --dev {dev:?} is not c|b:MAJOR:MINOR, e.g. c:10:232"
        ))
    };
    let mut parts = dev.split(':');
    let kind = match parts.next() {
        Some("c") => libc::S_IFCHR,
        Some("b") => libc::S_IFBLK,
        _ => return Err(bad()),
    };
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let c =
        CString::new(path).map_err(|_| WorkloadError::Usage("probe mknod: --path contains NUL".into()))?;
    // SAFETY: mknod reads the NUL-terminated path; no memory is written.
    let rc =
        libc::c_long::from(unsafe { libc::mknod(c.as_ptr(), kind | 0o600, libc::makedev(major, minor)) });
    let created = outcome(rc);
    let opened = if rc == 0 { open(path) } else { Value::Null };
    Ok(json!({"probe": "mknod", "path": path, "dev": dev, "mknod": Value::Object(created), "open": opened}))
}

fn tiocsti(fd: i32) -> Value {
    // SAFETY: isatty only queries the descriptor.
    let tty = unsafe { libc::isatty(fd) } == 1;
    let byte = b'\n';
    // SAFETY: TIOCSTI reads one byte from `byte`, alive for the call.
    let rc = libc::c_long::from(unsafe { libc::ioctl(fd, libc::TIOCSTI, &byte as *const u8) });
    with(outcome(rc), json!({"probe": "tiocsti", "fd": fd, "is_tty": tty}))
}

fn session() -> Value {
    let pid = nix::unistd::getpid().as_raw();
    let sid = nix::unistd::getsid(None).map(|p| p.as_raw()).unwrap_or(-1);
    json!({
        "probe": "session",
        "pid": pid,
        "ppid": nix::unistd::getppid().as_raw(),
        "sid": sid,
        "pgid": nix::unistd::getpgrp().as_raw(),
        "session_leader": sid == pid,
    })
}

fn kill_group(signal: u64) -> Result<Value, WorkloadError> {
    let signal = i32::try_from(signal)
        .ok()
        .filter(|s| (1..=64).contains(s) && *s != libc::SIGKILL && *s != libc::SIGSTOP)
        .ok_or_else(|| {
            WorkloadError::Usage(format!(
                "probe kill-group: --signal {signal} must be 1-64, not 9 or 19"
            ))
        })?;
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { libc::signal(signal, libc::SIG_IGN) };
    // SAFETY: kill takes no pointers.
    let rc = libc::c_long::from(unsafe { libc::kill(0, signal) });
    Ok(with(
        outcome(rc),
        json!({"probe": "kill-group", "signal": signal, "pgid": nix::unistd::getpgrp().as_raw()}),
    ))
}

fn syscalls() -> Value {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes the 120-byte params; a ring it creates is closed.
    let ring = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
    let ring_outcome = outcome(ring);
    if ring >= 0 {
        // SAFETY: closes the ring just created.
        unsafe { libc::close(ring as i32) };
    }
    // SAFETY: socket takes no pointers; a socket it creates is closed.
    let vsock = unsafe { libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
    let vsock_outcome = outcome(vsock);
    if vsock >= 0 {
        // SAFETY: closes the socket just created.
        unsafe { libc::close(vsock as i32) };
    }
    // SAFETY: personality(ADDR_NO_RANDOMIZE) changes only this process's flags (it exits soon).
    let personality = outcome(unsafe { libc::syscall(libc::SYS_personality, 0x0040000) });
    // SAFETY: getpid through the x32 ABI's number takes no arguments.
    let x32 = outcome(unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) });
    // SAFETY: a number no kernel has yet takes nothing.
    let unknown = outcome(unsafe { libc::syscall(1000) });
    // SAFETY: unshare takes no pointers; a new user namespace affects only this process.
    let unshare = outcome(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) });
    json!({
        "probe": "syscalls",
        "io_uring_setup": ring_outcome,
        "socket_af_vsock": vsock_outcome,
        "personality_addr_no_randomize": personality,
        "x32_getpid": x32,
        "syscall_1000": unknown,
        "unshare_newuser": unshare,
    })
}
