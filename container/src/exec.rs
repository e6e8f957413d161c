//! Running another process in a running container (OCI `exec`, `sandbox exec`): it joins the
//! container's namespaces and cgroup, and gets the same kind of identity, capabilities, limits
//! and seccomp filter as the container's own process, from the Plan it is given.
//!
//! The runtime process enters the container's PID namespace itself (that only affects its
//! children), forks, and moves the child into the container's cgroup before letting it go on;
//! the child joins the other namespaces (the user namespace first, the mount namespace last, so
//! paths resolve in the container from then on) and becomes the workload. Its first words come
//! back on a close-on-exec pipe: end-of-file means it is executing.

use crate::caps;
use crate::identity::{self, Identity};
use crate::rlimits;
use crate::seccomp::{self, Filters};
use crate::sys::{ctx, Step, StepError};
use crate::terminal;
use crate::ContainerError;
use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use sandbox_protocol::Plan;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Where the process goes.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    /// The container's first process (its namespaces are joined).
    pub pid: Pid,
    /// The container's cgroup directories.
    pub cgroup_dirs: Vec<PathBuf>,
    /// A unix socket for the terminal's master end (the plan's `terminal`).
    pub console_socket: Option<PathBuf>,
    /// Descriptors 3..3+N the process keeps.
    pub preserve_fds: u32,
}

/// The namespaces joined, user namespace first, mount namespace last.
const ORDER: [&str; 7] = ["user", "ipc", "uts", "net", "cgroup", "time", "mnt"];

struct Prepared {
    joins: Vec<(&'static str, OwnedFd)>,
    pid_ns: Option<OwnedFd>,
    filters: Option<Filters>,
    caps: caps::Sets,
    last_cap: u32,
    rlimits: Vec<rlimits::Resolved>,
    identity: Identity,
    argv: Vec<CString>,
    env: Vec<CString>,
    path_var: String,
    cwd: CString,
    no_new_privileges: bool,
    console: Option<OwnedFd>,
    terminal: bool,
    console_size: Option<(u16, u16)>,
    user_namespace: bool,
    preserve_fds: u32,
}

fn config(what: String) -> ContainerError {
    ContainerError::Config(what)
}

fn prepare(plan: &Plan, target: &ExecTarget) -> Result<Prepared, ContainerError> {
    let pid = target.pid;
    let same = |name: &str| {
        crate::namespaces::inode(&pid.to_string(), name) == crate::namespaces::inode("self", name)
    };
    let open = |name: &str| -> Result<OwnedFd, ContainerError> {
        let path = format!("/proc/{pid}/ns/{name}");
        std::fs::File::open(&path).map(OwnedFd::from).map_err(|e| {
            config(format!(
                "cannot open {path} ({e}): is the container still running?"
            ))
        })
    };
    let mut joins = Vec::new();
    for name in ORDER {
        if std::path::Path::new(&format!("/proc/{pid}/ns/{name}")).exists() && !same(name) {
            joins.push((name, open(name)?));
        }
    }
    let pid_ns = if same("pid") { None } else { Some(open("pid")?) };
    let filters = plan
        .isolation
        .seccomp
        .as_ref()
        .map(seccomp::compile)
        .transpose()?;
    let caps = caps::Sets::from_plan(plan.process.capabilities.as_ref())
        .map_err(|name| {
            config(format!(
                "unknown capability {name:?} in the process's capabilities"
            ))
        })?
        .limited_to(caps::bounding_of_self());
    let cstring = |what: &str, s: &str| {
        CString::new(s).map_err(|_| config(format!("{what} {s:?} contains a NUL byte")))
    };
    let argv = plan
        .command
        .iter()
        .map(|a| cstring("argument", a))
        .collect::<Result<Vec<_>, _>>()?;
    if argv.is_empty() {
        return Err(config("the process has no args: give the command to run".into()));
    }
    let env = plan
        .env
        .iter()
        .map(|(k, v)| cstring("environment variable", &format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let path_var = plan
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(sandbox_protocol::DEFAULT_PATH.to_string(), |(_, v)| v.clone());
    let (uid, gid) = plan.user.unwrap_or((0, 0));
    let console =
        match (&target.console_socket, plan.process.terminal) {
            (Some(path), true) => Some(terminal::connect(path).map_err(ContainerError::Config)?),
            (None, true) => return Err(config(
                "the process asks for a terminal but no --console-socket was given: pass one, or drop --tty"
                    .into(),
            )),
            _ => None,
        };
    Ok(Prepared {
        user_namespace: joins.iter().any(|(n, _)| *n == "user"),
        joins,
        pid_ns,
        filters,
        caps,
        last_cap: caps::last_cap(),
        rlimits: rlimits::resolve(&plan.process.rlimits).map_err(ContainerError::Config)?,
        identity: Identity {
            uid,
            gid,
            additional_gids: plan.process.additional_gids.clone(),
            umask: plan.process.umask,
        },
        argv,
        env,
        path_var,
        cwd: cstring("cwd", plan.workdir.as_deref().unwrap_or("/"))?,
        no_new_privileges: plan.process.no_new_privileges,
        console,
        terminal: plan.process.terminal,
        console_size: plan.process.console_size,
        preserve_fds: target.preserve_fds,
    })
}

/// Starts `plan`'s process in the container `target` names; returns its pid once it is
/// executing. Call it from a single-threaded process (it forks, and joins a PID namespace).
pub fn spawn(plan: &Plan, target: &ExecTarget) -> Result<Pid, ContainerError> {
    let mut prepared = prepare(plan, target)?;
    let (go_read, go_write) = crate::process::pipe()?;
    let (status_read, status_write) = crate::process::pipe()?;
    // Joining a PID namespace only changes where this process's children go; it is undone
    // after the fork, since the kernel refuses new threads (a terminal relay, `sandbox exec`'s
    // signal forwarding) to a process whose children's namespace is not its own.
    let own_pid_ns = match &prepared.pid_ns {
        Some(ns) => {
            let own = std::fs::File::open("/proc/self/ns/pid").map_err(|e| {
                ContainerError::sys(
                    "opening /proc/self/ns/pid",
                    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                )
            })?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWPID)
                .map_err(|e| ContainerError::sys("joining the container's pid namespace", e))?;
            Some(own)
        }
        None => None,
    };
    // SAFETY: the caller is single-threaded (see above); the child only makes system calls on
    // memory prepared before the fork and ends in execve or _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| ContainerError::sys("forking the exec process", e))? {
        ForkResult::Child => {
            drop(go_write);
            drop(status_read);
            let (message, code) = match child(&mut prepared, go_read.as_raw_fd()) {
                Ok(()) => ("the runtime went away before the process started".to_string(), 1),
                Err(e) if e.errno == Errno::ENOENT => (e.to_string(), sandbox_protocol::EXIT_NOT_FOUND),
                Err(e) => (e.to_string(), sandbox_protocol::EXIT_NOT_EXECUTABLE),
            };
            let _ = nix::unistd::write(&status_write, message.as_bytes());
            // SAFETY: ends the forked child without running the runtime's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(go_read);
            drop(status_write);
            if let Some(own) = own_pid_ns {
                nix::sched::setns(own, nix::sched::CloneFlags::CLONE_NEWPID)
                    .map_err(|e| ContainerError::sys("returning to this process's pid namespace", e))?;
            }
            let mut guard = crate::process::ChildProcess::new(child);
            for dir in &target.cgroup_dirs {
                let procs = dir.join("cgroup.procs");
                std::fs::write(&procs, child.as_raw().to_string()).map_err(|e| {
                    ContainerError::Cgroup(format!("moving the exec process into {}: {e}", procs.display()))
                })?;
            }
            crate::process::send_line(&go_write, "go\n")?;
            drop(go_write);
            let mut message = String::new();
            let _ = std::fs::File::from(status_read).read_to_string(&mut message);
            if !message.is_empty() {
                // The child exits with 127 (not found) or 126 (not executable) after the
                // message: that status is the exec's, as a shell's would be.
                let exit = guard.wait().unwrap_or(sandbox_protocol::EXIT_NOT_EXECUTABLE);
                return Err(ContainerError::ExecFailed { message, exit });
            }
            Ok(guard.release())
        }
    }
}

/// The exec process's steps, up to `execve`.
fn child(p: &mut Prepared, go: RawFd) -> Step {
    let mut byte = [0u8; 3];
    // SAFETY: `go` is the pipe's read end, open in this process.
    let go = unsafe { std::os::fd::BorrowedFd::borrow_raw(go) };
    if !matches!(nix::unistd::read(go, &mut byte), Ok(n) if n > 0) {
        return Ok(());
    }
    for (name, fd) in &p.joins {
        ctx(nix::sched::setns(fd, nix::sched::CloneFlags::empty()), || {
            format!("joining the container's {name} namespace")
        })?;
    }
    ctx(nix::unistd::setsid().map(drop), || {
        "starting a new session".into()
    })?;
    if p.terminal {
        let pty = terminal::open(std::path::Path::new("/"), p.console_size)?;
        if let Some(socket) = p.console.take() {
            terminal::send_master(socket.as_raw_fd(), &pty.master)?;
        }
        terminal::become_stdio(&pty.slave)?;
    }
    rlimits::apply(&p.rlimits).map_err(|(what, errno)| StepError { what, errno })?;
    crate::child::mark_cloexec_from(3 + p.preserve_fds)?;
    if !p.no_new_privileges {
        install(&p.filters)?;
    }
    caps::drop_bounding(p.caps.bounding, p.last_cap).map_err(|(what, errno)| StepError {
        what: what.into(),
        errno,
    })?;
    identity::switch(&p.identity, !(p.user_namespace && crate::namespaces::rootless()))?;
    ctx(nix::unistd::chdir(p.cwd.as_c_str()), || {
        format!("changing into the working directory {}", p.cwd.to_string_lossy())
    })?;
    caps::set(&p.caps, p.last_cap).map_err(|(what, errno)| StepError {
        what: what.into(),
        errno,
    })?;
    if p.no_new_privileges {
        ctx(nix::sys::prctl::set_no_new_privs(), || {
            "setting no_new_privs".into()
        })?;
        install(&p.filters)?;
    }
    crate::child::reset_signals();
    let program = p.argv[0].to_string_lossy().into_owned();
    let path = CString::new(crate::child::find_program(&program, &p.path_var)).map_err(|_| StepError {
        what: "the program name contains a NUL byte".into(),
        errno: Errno::EINVAL,
    })?;
    let err = nix::unistd::execve(&path, &p.argv, &p.env).unwrap_err();
    Err(StepError {
        what: format!("executing {program}"),
        errno: err,
    })
}

fn install(filters: &Option<Filters>) -> Step {
    match filters {
        Some(f) => f.install().map_err(|e| StepError {
            what: format!("installing the seccomp filter ({e})"),
            errno: Errno::EINVAL,
        }),
        None => Ok(()),
    }
}
