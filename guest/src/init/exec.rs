//! Starting the workload: its environment, the PATH search, and the child's side of the fork
//! (ready fd kept open, user and working directory applied, then exec).

use super::reaper;
use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use sandbox_protocol::{Plan, ReadyChannel, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, READY_ENV};
use std::ffi::CString;
use std::path::Path;

/// The PATH every workload starts with.
pub use sandbox_protocol::DEFAULT_PATH;

/// Why the workload could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the {what} contains a NUL byte: {value:?}")]
    Nul { what: &'static str, value: String },
    #[error("cannot fork the workload: {0}")]
    Fork(Errno),
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
    for (k, v) in extra {
        match env.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    env
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
pub struct Prepared {
    program: String,
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workdir: Option<CString>,
    user: Option<(u32, u32)>,
    ready_fd: Option<i32>,
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

fn cstring(what: &'static str, value: &str) -> Result<CString, SpawnError> {
    CString::new(value).map_err(|_| SpawnError::Nul {
        what,
        value: value.into(),
    })
}

/// Converts the plan's command, environment and working directory for exec.
pub fn prepare(plan: &Plan) -> Result<Prepared, SpawnError> {
    let argv_text = plan.argv();
    let env = environment(plan);
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    let program = argv_text.first().cloned().unwrap_or_default();
    Ok(Prepared {
        candidates: candidates(&program, path)
            .iter()
            .map(|c| cstring("command path", c))
            .collect::<Result<_, _>>()?,
        argv: argv_text
            .iter()
            .map(|a| cstring("command", a))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|(k, v)| cstring("environment", &format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        workdir: plan
            .workdir
            .as_deref()
            .map(|w| cstring("working directory", w))
            .transpose()?,
        user: plan.user,
        terminal: plan.process.terminal.then(|| terminal_for(plan)).transpose()?,
        null_stdin: plan.mode == sandbox_protocol::Mode::Vm && !plan.process.terminal && !plan.stdin,
        ready_fd: match plan.ready {
            ReadyChannel::Fd(fd) => Some(fd),
            _ => None,
        },
        program,
    })
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

/// Gives the child its terminal (before signals are unblocked: a background job changing
/// the foreground group would otherwise be stopped by SIGTTOU).
fn take_terminal(terminal: &Terminal) -> Result<(), String> {
    match terminal {
        Terminal::Inherited => {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
                .map_err(|e| format!("cannot start a process group: {e}"))?;
            // A group not in the foreground that takes the terminal gets SIGTTOU unless it is
            // blocked ([`reaper::unblock_all`] lifts it again before exec).
            let mut ttou = nix::sys::signal::SigSet::empty();
            ttou.add(Signal::SIGTTOU);
            nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&ttou), None)
                .map_err(|e| format!("cannot block SIGTTOU: {e}"))?;
            nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpgrp())
                .map_err(|e| format!("cannot become the terminal's foreground job: {e}"))
        }
        Terminal::Device { path, size } => {
            nix::unistd::setsid().map_err(|e| format!("cannot start a session: {e}"))?;
            // A session leader without a terminal acquires the first one it opens.
            let fd = nix::fcntl::open(
                path.as_c_str(),
                nix::fcntl::OFlag::O_RDWR,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("cannot open the console {path:?}: {e}"))?;
            // SAFETY: TIOCSCTTY takes an int by value (0: do not steal it from another session).
            unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::TIOCSCTTY, 0) };
            if let Some((rows, cols)) = size {
                let ws = libc::winsize {
                    ws_row: *rows,
                    ws_col: *cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one winsize, which `ws` is.
                unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::TIOCSWINSZ, &ws) };
            }
            for target in 0..3 {
                // SAFETY: dup2 replaces descriptors 0-2 of this forked child with the console.
                if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&fd), target) } < 0 {
                    return Err(format!("cannot make the console fd {target}: {}", Errno::last()));
                }
            }
            Ok(())
        }
    }
}

/// Makes descriptor 0 `/dev/null`.
fn stdin_from_null() -> Result<(), String> {
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open /dev/null for stdin: {e}"))?;
    // SAFETY: dup2 replaces descriptor 0 of this forked child.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) } < 0 {
        return Err(format!("cannot make /dev/null the stdin: {}", Errno::last()));
    }
    Ok(())
}

/// Forks; the child runs the workload and never returns. Signals must already be blocked
/// ([`reaper::block_signals`]).
pub fn spawn(prepared: &Prepared) -> Result<Pid, SpawnError> {
    // SAFETY: init is single-threaded (it starts no threads), so the child may run ordinary code
    // — allocation included — until it execs or exits.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => child_main(prepared),
        Err(e) => Err(SpawnError::Fork(e)),
    }
}

/// Ends the child before exec with `status`, after saying why.
fn child_fail(status: i32, message: &str) -> ! {
    eprintln!("sandbox-guest: {message}");
    // SAFETY: _exit ends this forked child at once, without running the parent's atexit
    // handlers or flushing buffers the parent still owns.
    unsafe { libc::_exit(status) }
}

/// The child's side: restore signal defaults, keep the ready fd, switch user and directory,
/// then exec the first candidate that works.
fn child_main(p: &Prepared) -> ! {
    if let Some(terminal) = &p.terminal {
        if let Err(e) = take_terminal(terminal) {
            child_fail(1, &e);
        }
    }
    if p.null_stdin {
        if let Err(e) = stdin_from_null() {
            child_fail(1, &e);
        }
    }
    reaper::unblock_all();
    // Rust's runtime ignores SIGPIPE in this process, and the launcher may have ignored others;
    // an ignored disposition would survive exec, so the workload gets the defaults back.
    for sig in reaper::FORWARDED.into_iter().chain([Signal::SIGPIPE]) {
        // SAFETY: setting the default disposition installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    if let Some(fd) = p.ready_fd {
        // SAFETY: F_SETFD with 0 only clears the close-on-exec flag of the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            let e = std::io::Error::last_os_error();
            child_fail(1, &format!("ready channel fd:{fd} is not open in init: {e}"));
        }
    }
    if let Some((uid, gid)) = p.user {
        let gid = Gid::from_raw(gid);
        let result = nix::unistd::setgroups(&[gid])
            .and_then(|()| nix::unistd::setgid(gid))
            .and_then(|()| nix::unistd::setuid(Uid::from_raw(uid)));
        if let Err(e) = result {
            child_fail(1, &format!("cannot switch to uid {uid} gid {gid}: {e}"));
        }
    }
    if let Some(dir) = &p.workdir {
        if let Err(e) = nix::unistd::chdir(dir.as_c_str()) {
            child_fail(1, &format!("cannot change to the working directory {dir:?}: {e}"));
        }
    }
    let mut denied = None;
    for candidate in &p.candidates {
        let err = match nix::unistd::execve(candidate, &p.argv, &p.envp) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        match err {
            Errno::ENOENT | Errno::ENOTDIR => {
                if Path::new(&*candidate.to_string_lossy()).is_file() {
                    child_fail(
                        EXIT_NOT_FOUND,
                        &format!(
                            "{}: {}: its interpreter or dynamic loader is missing in this image",
                            p.program,
                            candidate.to_string_lossy()
                        ),
                    );
                }
            }
            Errno::ENOEXEC => {
                // execvp runs files without a #! line with the shell.
                let mut argv = vec![c"/bin/sh".to_owned(), candidate.clone()];
                argv.extend(p.argv.iter().skip(1).cloned());
                let _ = nix::unistd::execve(c"/bin/sh", &argv, &p.envp);
                denied = Some((candidate, Errno::ENOEXEC));
            }
            e => denied = denied.or(Some((candidate, e))),
        }
    }
    match denied {
        Some((candidate, e)) => child_fail(
            EXIT_NOT_EXECUTABLE,
            &format!(
                "{}: {} cannot be executed: {e}",
                p.program,
                candidate.to_string_lossy()
            ),
        ),
        None => child_fail(
            EXIT_NOT_FOUND,
            &format!("{}: command not found in this image", p.program),
        ),
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
