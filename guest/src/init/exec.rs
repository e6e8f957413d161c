//! Starting a process: the workload (its environment, the PATH search, and the child's side of
//! the fork: ready fd kept open, user and working directory applied, then exec), and the same
//! for what the guest agent starts ([`spawn_with`]: other stdio, failures reported on a pipe).
//!
//! The child's side runs between `fork` and `exec` while the guest agent's threads may exist
//! (in a VM): it only makes system calls, on data converted before the fork — no allocation,
//! no lock (another thread may have held the allocator's or stderr's at the fork), messages
//! formatted on the stack.

use super::reaper;
use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use sandbox_protocol::{Plan, ReadyChannel, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, READY_ENV};
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::RawFd;

/// The PATH every workload starts with.
pub use sandbox_protocol::DEFAULT_PATH;

/// Why the workload could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the {what} contains a NUL byte: {value:?}")]
    Nul { what: &'static str, value: String },
    #[error("cannot fork the workload: {0}")]
    Fork(Errno),
    #[error("the workload has ended and the sandbox is shutting down: nothing more can start")]
    Ending,
    #[error("cannot open the workload's {kind} namespace ({path}) to join it: {source}")]
    Namespace {
        kind: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// The workload's environment: PATH, HOME and TERM defaults, then the plan's variables (which
/// override them), then `SANDBOX_READY`.
pub fn environment(plan: &Plan) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("TERM".into(), "linux".into()),
    ];
    let extra = plan
        .env
        .iter()
        .cloned()
        .chain([(READY_ENV.to_string(), plan.ready.to_string())]);
    overlay(&mut env, extra);
    env
}

/// Sets each of `extra` in `env`: replaces a variable of the same name, or adds it.
pub fn overlay(env: &mut Vec<(String, String)>, extra: impl IntoIterator<Item = (String, String)>) {
    for (k, v) in extra {
        match env.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
}

/// The paths an execvp-style search tries for `program` under `path`.
pub fn candidates(program: &str, path: &str) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_string()];
    }
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .collect()
}

/// Everything the child needs, converted before the fork.
#[derive(Debug)]
pub struct Prepared {
    program: String,
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workdir: Option<CString>,
    user: Option<(u32, u32)>,
    ready_fd: Option<i32>,
    /// The root the process sees (`chroot`): a VM's workload root, for every process.
    root: Option<CString>,
    /// `setrlimit` calls: (resource, soft, hard), the workload's.
    rlimits: Vec<(i32, u64, u64)>,
    /// An OCI bundle's namespaces, capabilities and seccomp filters (VM mode).
    confinement: Option<std::sync::Arc<super::confine::Confinement>>,
    /// The running workload's namespaces (open `/proc/PID/ns` files and their `setns` types):
    /// a process the agent starts joins them instead of making namespaces of its own.
    join: Vec<(std::os::fd::OwnedFd, libc::c_int)>,
    terminal: Option<Terminal>,
    /// Stdin becomes `/dev/null` (a VM's workload without `-i` or `-t`).
    null_stdin: bool,
}

/// How the workload gets its terminal (the Plan's `process.terminal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    /// A container: init's stdio already is the pty and init leads its session; the workload
    /// becomes the terminal's foreground job.
    Inherited,
    /// A VM: the workload starts a session on the console's own device (`/dev/ttyS0`; the
    /// kernel never makes `/dev/console` a controlling terminal), sized as the host's.
    Device { path: CString, size: Option<(u16, u16)> },
}

/// Where a child's stdin, stdout and stderr come from.
#[derive(Debug, Clone, Copy)]
pub enum ChildIo<'a> {
    /// As [`Prepared`] says: init's own stdio, the console as a terminal, `/dev/null` as stdin.
    Prepared,
    /// These descriptors become 0, 1 and 2 (the guest agent's pipes: each 3 or above, or
    /// already its own target).
    Fds([RawFd; 3]),
    /// The pseudo-terminal slave at this path becomes the child's controlling terminal and its
    /// 0, 1 and 2 (the guest agent's pty).
    Pty(&'a CStr),
}

fn cstring(what: &'static str, value: &str) -> Result<CString, SpawnError> {
    CString::new(value).map_err(|_| SpawnError::Nul {
        what,
        value: value.into(),
    })
}

/// The workload root every process from now on is started in ([`Prepared`]).
static WORKLOAD_ROOT: std::sync::OnceLock<CString> = std::sync::OnceLock::new();

/// The confinement every process from now on is started with ([`Prepared`]).
static CONFINEMENT: std::sync::OnceLock<std::sync::Arc<super::confine::Confinement>> =
    std::sync::OnceLock::new();

/// Applies `c` to the workload and every process the agent starts (once, by init).
pub fn set_confinement(c: super::confine::Confinement) {
    let _ = CONFINEMENT.set(std::sync::Arc::new(c));
}

/// Makes `path` the root of the workload and of every process the agent starts (once, by init,
/// after mounting it).
pub fn set_workload_root(path: &str) {
    if let Ok(c) = CString::new(path) {
        let _ = WORKLOAD_ROOT.set(c);
    }
}

/// The `RLIMIT_*` resource an OCI name stands for.
fn rlimit_resource(name: &str) -> Option<i32> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    } as i32)
}

/// Converts the plan's command, environment and working directory for exec.
pub fn prepare(plan: &Plan) -> Result<Prepared, SpawnError> {
    let mut prepared = prepare_command(
        &plan.argv(),
        &environment(plan),
        plan.workdir.as_deref(),
        plan.user,
    )?;
    prepared.terminal = plan.process.terminal.then(|| terminal_for(plan)).transpose()?;
    prepared.null_stdin = plan.mode == sandbox_protocol::Mode::Vm && !plan.process.terminal && !plan.stdin;
    // Names the host did not check (the host refuses unknown ones) are skipped.
    prepared.rlimits = plan
        .process
        .rlimits
        .iter()
        .filter_map(|r| Some((rlimit_resource(&r.kind)?, r.soft, r.hard)))
        .collect();
    prepared.ready_fd = match plan.ready {
        ReadyChannel::Fd(fd) => Some(fd),
        _ => None,
    };
    Ok(prepared)
}

/// Converts a command for exec: `argv` (its program searched in `env`'s PATH, else
/// [`DEFAULT_PATH`]), the whole environment, the working directory and the user. The child
/// keeps the stdio it is given, with no terminal of its own and no ready channel.
pub fn prepare_command(
    argv: &[String],
    env: &[(String, String)],
    workdir: Option<&str>,
    user: Option<(u32, u32)>,
) -> Result<Prepared, SpawnError> {
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    let program = argv.first().cloned().unwrap_or_default();
    Ok(Prepared {
        candidates: candidates(&program, path)
            .iter()
            .map(|c| cstring("command path", c))
            .collect::<Result<_, _>>()?,
        argv: argv
            .iter()
            .map(|a| cstring("command", a))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|(k, v)| cstring("environment", &format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        workdir: workdir.map(|w| cstring("working directory", w)).transpose()?,
        user,
        terminal: None,
        null_stdin: false,
        ready_fd: None,
        root: WORKLOAD_ROOT.get().cloned(),
        rlimits: Vec::new(),
        confinement: CONFINEMENT.get().cloned(),
        join: Vec::new(),
        program,
    })
}

impl Prepared {
    /// Makes the process join the namespaces of the running workload `pid` (those the
    /// confinement gives it), as an OCI `exec` does, instead of making new ones: it then sees
    /// the workload's mounts, hostname, network and IPC objects.
    pub fn join_namespaces_of(&mut self, pid: Pid) -> Result<(), SpawnError> {
        let Some(c) = self.confinement.as_deref() else {
            return Ok(());
        };
        for (kind, flag) in c.namespace_files() {
            let path = format!("/proc/{pid}/ns/{kind}");
            let file = std::fs::File::open(&path).map_err(|source| SpawnError::Namespace {
                kind,
                path: path.clone(),
                source,
            })?;
            self.join.push((file.into(), flag));
        }
        Ok(())
    }
}

fn terminal_for(plan: &Plan) -> Result<Terminal, SpawnError> {
    if plan.mode != sandbox_protocol::Mode::Vm {
        return Ok(Terminal::Inherited);
    }
    // The last console the kernel writes to is the one `/dev/console` reads from.
    let name = std::fs::read_to_string("/sys/class/tty/console/active")
        .ok()
        .and_then(|s| s.split_whitespace().last().map(str::to_string))
        .unwrap_or_else(|| "ttyS0".to_string());
    Ok(Terminal::Device {
        path: cstring("console device", &format!("/dev/{name}"))?,
        size: plan.process.console_size,
    })
}

/// Forks; the child runs the workload and never returns. Signals must already be blocked
/// ([`reaper::block_signals`]).
pub fn spawn(prepared: &Prepared) -> Result<Pid, SpawnError> {
    spawn_with(prepared, ChildIo::Prepared, None)
}

/// Forks; the child takes its stdio from `io` and runs the prepared command. With `report`, a
/// failure before exec is written to that descriptor (the write end of a close-on-exec pipe)
/// as one status byte (127, 126 or 1) and a message, instead of to stderr; an exec that
/// succeeds closes it with nothing written.
pub fn spawn_with(prepared: &Prepared, io: ChildIo<'_>, report: Option<RawFd>) -> Result<Pid, SpawnError> {
    let arrays = ExecArrays::new(prepared);
    // SAFETY: the child only runs `child_main`, which makes system calls on data prepared
    // above and allocates nothing and takes no lock, so other threads (the guest agent's)
    // holding those at the fork cannot block it; it ends in exec or `_exit`.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => Child { report }.main(prepared, &arrays, io),
        Err(e) => Err(SpawnError::Fork(e)),
    }
}

/// The NULL-terminated pointer arrays `execve` takes, built before the fork.
struct ExecArrays {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// For each candidate: `/bin/sh CANDIDATE ARGS...`, for a file without a `#!` line.
    sh_argv: Vec<Vec<*const libc::c_char>>,
}

impl ExecArrays {
    fn new(p: &Prepared) -> ExecArrays {
        let array = |items: &mut dyn Iterator<Item = &CStr>| -> Vec<*const libc::c_char> {
            items.map(CStr::as_ptr).chain([std::ptr::null()]).collect()
        };
        ExecArrays {
            argv: array(&mut p.argv.iter().map(CString::as_c_str)),
            envp: array(&mut p.envp.iter().map(CString::as_c_str)),
            sh_argv: p
                .candidates
                .iter()
                .map(|c| {
                    array(
                        &mut [c"/bin/sh", c.as_c_str()]
                            .into_iter()
                            .chain(p.argv.iter().skip(1).map(CString::as_c_str)),
                    )
                })
                .collect(),
        }
    }
}

/// A message formatted without allocating (truncated at the buffer's end).
struct StackText {
    buf: [u8; 1024],
    len: usize,
}

impl StackText {
    fn new() -> StackText {
        StackText {
            buf: [0; 1024],
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = byte;
            self.len += 1;
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// A C string as text for a message (the common case: UTF-8).
fn text(c: &CStr) -> &str {
    c.to_str().unwrap_or("<a non-UTF-8 name>")
}

/// Whether `path` is a regular file (`stat`, no allocation).
fn is_file(path: &CStr) -> bool {
    // SAFETY: an all-zero `stat` is a valid value of the plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a writable `stat`.
    let rc = unsafe { libc::stat(path.as_ptr(), &mut st) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// The child between fork and exec.
struct Child {
    /// Where a failure goes: the report pipe, or (none) stderr.
    report: Option<RawFd>,
}

impl Child {
    /// Ends the child before exec with `status`, after saying why.
    fn fail(&self, status: i32, message: fmt::Arguments<'_>) -> ! {
        use fmt::Write as _;
        let mut out = StackText::new();
        let fd = match self.report {
            Some(fd) => {
                out.push(status as u8);
                fd
            }
            None => {
                let _ = out.write_str("sandbox-guest: ");
                2
            }
        };
        let _ = out.write_fmt(message);
        if self.report.is_none() {
            let _ = out.write_str("\n");
        }
        let bytes = out.bytes();
        // SAFETY: write(2) reads `bytes`, which outlives the call; then _exit ends this forked
        // child at once, without running the parent's atexit handlers or flushing buffers the
        // parent still owns.
        unsafe {
            libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(status)
        }
    }

    /// Makes descriptor `target` a copy of `fd` (open across exec).
    fn dup_to(&self, fd: RawFd, target: RawFd, what: &str) {
        // SAFETY: dup2 replaces a descriptor of this forked child, and F_SETFD with 0 only
        // clears the close-on-exec flag (dup2 onto itself would keep it); no memory is involved.
        let rc = unsafe {
            if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            }
        };
        if rc < 0 {
            self.fail(
                1,
                format_args!("cannot make the {what} fd {target}: {}", Errno::last()),
            );
        }
    }

    /// Starts a session on the terminal at `path` (its controlling terminal, sized `size`) and
    /// makes it descriptors 0-2.
    fn take_device(&self, path: &CStr, size: Option<(u16, u16)>) {
        if let Err(e) = nix::unistd::setsid() {
            self.fail(1, format_args!("cannot start a session: {e}"));
        }
        // A session leader without a terminal acquires the first one it opens.
        let fd = match nix::fcntl::open(path, nix::fcntl::OFlag::O_RDWR, nix::sys::stat::Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => self.fail(1, format_args!("cannot open the console {path:?}: {e}")),
        };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // SAFETY: TIOCSCTTY takes an int by value (0: do not steal it from another session).
        unsafe { libc::ioctl(raw, libc::TIOCSCTTY, 0) };
        if let Some((rows, cols)) = size {
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads one winsize, which `ws` is.
            unsafe { libc::ioctl(raw, libc::TIOCSWINSZ, &ws) };
        }
        for target in 0..3 {
            self.dup_to(raw, target, "console");
        }
    }

    /// Gives the child its terminal (before signals are unblocked: a background job changing
    /// the foreground group would otherwise be stopped by SIGTTOU).
    fn take_terminal(&self, terminal: &Terminal) {
        match terminal {
            Terminal::Inherited => {
                if let Err(e) = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)) {
                    self.fail(1, format_args!("cannot start a process group: {e}"));
                }
                // A group not in the foreground that takes the terminal gets SIGTTOU unless it
                // is blocked ([`reaper::unblock_all`] lifts it again before exec).
                let mut ttou = nix::sys::signal::SigSet::empty();
                ttou.add(Signal::SIGTTOU);
                if let Err(e) =
                    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&ttou), None)
                {
                    self.fail(1, format_args!("cannot block SIGTTOU: {e}"));
                }
                // SAFETY: descriptor 0 is init's stdin, open for its whole life.
                let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
                if let Err(e) = nix::unistd::tcsetpgrp(stdin, nix::unistd::getpgrp()) {
                    self.fail(
                        1,
                        format_args!("cannot become the terminal's foreground job: {e}"),
                    );
                }
            }
            Terminal::Device { path, size } => self.take_device(path, *size),
        }
    }

    /// Makes descriptor 0 `/dev/null`.
    fn stdin_from_null(&self) {
        match nix::fcntl::open(
            c"/dev/null",
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(null) => self.dup_to(std::os::fd::AsRawFd::as_raw_fd(&null), 0, "/dev/null stdin"),
            Err(e) => self.fail(1, format_args!("cannot open /dev/null for stdin: {e}")),
        }
    }

    /// The child's side: stdio, signal defaults, the ready fd, user and directory, then exec
    /// of the first candidate that works.
    fn main(&self, p: &Prepared, arrays: &ExecArrays, io: ChildIo<'_>) -> ! {
        match io {
            ChildIo::Prepared => {
                if let Some(terminal) = &p.terminal {
                    self.take_terminal(terminal);
                }
                if p.null_stdin {
                    self.stdin_from_null();
                }
            }
            ChildIo::Fds(fds) => {
                for (target, fd) in (0..).zip(fds) {
                    self.dup_to(fd, target, "stdio");
                }
            }
            ChildIo::Pty(path) => self.take_device(path, None),
        }
        reaper::unblock_all();
        // Rust's runtime ignores SIGPIPE in this process, and the launcher may have ignored
        // others; an ignored disposition would survive exec, so the workload gets the defaults
        // back.
        for sig in reaper::FORWARDED.into_iter().chain([Signal::SIGPIPE]) {
            // SAFETY: setting the default disposition installs no handler code.
            let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        }
        if let Some(fd) = p.ready_fd {
            // SAFETY: F_SETFD with 0 only clears the close-on-exec flag of the descriptor.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
                let e = Errno::last();
                self.fail(1, format_args!("ready channel fd:{fd} is not open in init: {e}"));
            }
        }
        let confinement = p.confinement.as_deref();
        if !p.join.is_empty() {
            for (fd, flag) in &p.join {
                // SAFETY: setns takes a descriptor this process holds open and a type flag.
                if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(fd), *flag) } < 0 {
                    let e = Errno::last();
                    self.fail(
                        1,
                        format_args!("cannot join the workload's namespace ({flag:#x}): {e}"),
                    );
                }
            }
        } else if let Some(c) = confinement {
            if let Err((what, e)) = c.unshare() {
                self.fail(1, format_args!("{what}: {e}"));
            }
        }
        for &(resource, soft, hard) in &p.rlimits {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit reads one rlimit, which `limit` is.
            if unsafe { libc::setrlimit(resource as _, &limit) } < 0 {
                let e = Errno::last();
                self.fail(
                    1,
                    format_args!("cannot set resource limit {resource} to {soft}/{hard}: {e}"),
                );
            }
        }
        if let Some(root) = &p.root {
            if let Err(e) = nix::unistd::chroot(root.as_c_str()).and_then(|()| nix::unistd::chdir(c"/")) {
                self.fail(1, format_args!("cannot enter the workload's root {root:?}: {e}"));
            }
        }
        if let Some(c) = confinement {
            let early = if c.seccomp_early() {
                c.install_seccomp()
            } else {
                Ok(())
            };
            if let Err((what, e)) = early.and_then(|()| c.before_identity()) {
                self.fail(1, format_args!("{what}: {e}"));
            }
        }
        if let Some((uid, gid)) = p.user {
            let gid = Gid::from_raw(gid);
            let result = nix::unistd::setgroups(&[gid])
                .and_then(|()| nix::unistd::setgid(gid))
                .and_then(|()| nix::unistd::setuid(Uid::from_raw(uid)));
            if let Err(e) = result {
                self.fail(1, format_args!("cannot switch to uid {uid} gid {gid}: {e}"));
            }
        }
        if let Some(dir) = &p.workdir {
            if let Err(e) = nix::unistd::chdir(dir.as_c_str()) {
                self.fail(
                    1,
                    format_args!("cannot change to the working directory {dir:?}: {e}"),
                );
            }
        }
        if let Some(c) = confinement {
            // With no_new_privs (set by after_identity) the filters go in last.
            let result = c.after_identity().and_then(|()| {
                if c.seccomp_early() {
                    Ok(())
                } else {
                    c.install_seccomp()
                }
            });
            if let Err((what, e)) = result {
                self.fail(1, format_args!("{what}: {e}"));
            }
        }
        let mut denied = None;
        for (candidate, sh_argv) in p.candidates.iter().zip(&arrays.sh_argv) {
            // SAFETY: the arrays are NULL-terminated and point into `p`'s strings, alive here.
            unsafe { libc::execve(candidate.as_ptr(), arrays.argv.as_ptr(), arrays.envp.as_ptr()) };
            match Errno::last() {
                Errno::ENOENT | Errno::ENOTDIR => {
                    if is_file(candidate) {
                        self.fail(
                            EXIT_NOT_FOUND,
                            format_args!(
                                "{}: {}: its interpreter or dynamic loader is missing in this image",
                                p.program,
                                text(candidate)
                            ),
                        );
                    }
                }
                Errno::ENOEXEC => {
                    // execvp runs files without a #! line with the shell.
                    // SAFETY: as above; `sh_argv` is this candidate's NULL-terminated array.
                    unsafe { libc::execve(c"/bin/sh".as_ptr(), sh_argv.as_ptr(), arrays.envp.as_ptr()) };
                    denied = Some((candidate, Errno::ENOEXEC));
                }
                e => denied = denied.or(Some((candidate, e))),
            }
        }
        match denied {
            Some((candidate, e)) => self.fail(
                EXIT_NOT_EXECUTABLE,
                format_args!("{}: {} cannot be executed: {e}", p.program, text(candidate)),
            ),
            None => self.fail(
                EXIT_NOT_FOUND,
                format_args!("{}: command not found in this image", p.program),
            ),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_protocol::Mode;

    #[test]
    fn plan_env_overrides_defaults_and_ready_is_added() {
        let mut plan = Plan::new(Mode::Container, vec!["true".into()]);
        plan.env = vec![("TERM".into(), "xterm".into()), ("A".into(), "1".into())];
        plan.ready = ReadyChannel::Fd(3);
        let env = environment(&plan);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("TERM"), Some("xterm"));
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(get("HOME"), Some("/root"));
        assert_eq!(get(READY_ENV), Some("fd:3"));
    }

    #[test]
    fn path_search_candidates() {
        assert_eq!(candidates("/bin/sh", "/x"), vec!["/bin/sh"]);
        assert_eq!(
            candidates("sh", "/usr/bin:/bin/:"),
            vec!["/usr/bin/sh", "/bin/sh", "./sh"]
        );
    }
}
