//! The container's first process, from `clone` to `execve` of the guest program.
//!
//! It starts as PID 1 of new PID, mount, UTS, IPC and network namespaces (and a user namespace
//! when rootless), with a copy of the launcher's memory, and then, in this fixed order:
//! 1. asks for SIGKILL when the launcher dies, and waits for the launcher's "go" (sent once the
//!    launcher has put it in its cgroup, written the Plan, and moved in the veth);
//! 2. unshares its cgroup namespace (rooted at the container's cgroup) — "namespaces ready";
//! 3. makes all mounts private, sets the hostname, brings up `lo` (and `eth0`);
//! 4. mounts the overlay, pivots into it, mounts /proc, /sys, /dev, /tmp, /run and the volumes,
//!    masks and write-protects the runc default paths, detaches the old root — "rootfs ready";
//! 5. reduces its capabilities to the default set, sets `no_new_privs`, installs the seccomp
//!    filter, and executes `/usr/bin/sandbox-guest init` — "exec".
//!
//! Progress and failures go to the launcher through the status pipe, which is close-on-exec:
//! end-of-file after "exec" means the guest program is running. Nothing here returns: the
//! process either executes the guest program or exits.

use crate::caps;
use crate::rootfs::{self, BindVolume, OLD_ROOT};
use crate::seccomp::Filters;
use crate::sys::{ctx, Step, StepError};
use crate::{devices, mounts};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sched::CloneFlags;
use sandbox_protocol::ifconfig as guest_net;
use sandbox_protocol::trace;
use sandbox_protocol::NetPlan;
use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};

/// Everything the first process needs, prepared by the launcher before `clone`.
#[derive(Debug)]
pub struct ChildConfig {
    pub rootless: bool,
    pub hostname: String,
    pub overlay_options: String,
    pub rootfs: PathBuf,
    pub plan_path: PathBuf,
    pub volumes: Vec<BindVolume>,
    pub filters: Filters,
    pub last_cap: u32,
    /// The launcher's cgroup namespace inode, printed next to the container's by `--trace`.
    pub host_cgroup_ns: Option<u64>,
    pub init_path: CString,
    pub init_argv: Vec<CString>,
    pub init_env: Vec<CString>,
    /// Read end of the go pipe.
    pub go_fd: RawFd,
    /// Write end of the status pipe (close-on-exec).
    pub status_fd: RawFd,
    /// Write end of the ready pipe, inherited by the guest program.
    pub ready_fd: RawFd,
}

/// Status-pipe record tags.
pub mod tag {
    pub const NAMESPACES: &str = "N";
    pub const ROOTFS: &str = "R";
    pub const EXEC: &str = "X";
    pub const ERROR: &str = "E";
}

/// The go message: `go` for loopback only, or `go IFACE ADDR PREFIX GATEWAY` for a link.
pub fn go_message(net: Option<&NetPlan>) -> String {
    match net {
        None => "go\n".to_string(),
        Some(n) => format!(
            "go {} {} {} {}\n",
            n.interface,
            n.address,
            n.prefix_len,
            n.gateway.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
        ),
    }
}

fn parse_go(line: &str) -> Option<Option<NetPlan>> {
    let mut words = line.split_whitespace();
    if words.next()? != "go" {
        return None;
    }
    let Some(interface) = words.next() else {
        return Some(None);
    };
    let address: Ipv4Addr = words.next()?.parse().ok()?;
    let prefix_len: u8 = words.next()?.parse().ok()?;
    let gateway = match words.next()? {
        "-" => None,
        g => Some(g.parse().ok()?),
    };
    Some(Some(NetPlan {
        interface: interface.to_string(),
        address,
        prefix_len,
        gateway,
    }))
}

fn write_all(fd: RawFd, mut bytes: &[u8]) {
    // SAFETY: `fd` is the status pipe's write end, open for the child's whole life.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn report(cfg: &ChildConfig, tag: &str, text: &str) {
    write_all(cfg.status_fd, format!("{tag} {text}\n").as_bytes());
}

fn mark(cfg: &ChildConfig, tag: &str) {
    report(cfg, tag, &trace::now_ns().to_string());
}

/// Reads the go line; `None` when the launcher closed the pipe without sending it.
fn wait_for_go(fd: RawFd) -> Option<String> {
    // SAFETY: `fd` is the go pipe's read end, open for the child's whole life.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut buf = [0u8; 256];
    let mut len = 0;
    while len < buf.len() {
        match nix::unistd::read(fd, &mut buf[len..]) {
            Ok(0) => return None,
            Ok(n) => {
                len += n;
                if buf[..len].contains(&b'\n') {
                    break;
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// The first process's body; never returns.
pub fn main(cfg: &ChildConfig) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| setup_and_exec(cfg)));
    let message = match result {
        Ok(Ok(())) => None, // the launcher went away before "go": nothing to report.
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the container set-up panicked".to_string()),
    };
    if let Some(m) = message {
        report(cfg, tag::ERROR, &m);
    }
    // SAFETY: _exit ends this process at once, without running the launcher's atexit handlers
    // or destructors, which belong to the launcher's copy of this memory.
    unsafe { libc::_exit(1) }
}

fn setup_and_exec(cfg: &ChildConfig) -> Step {
    // 1. Die with the launcher; then wait for it to finish its part.
    ctx(
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL),
        || "asking for SIGKILL on the launcher's death".into(),
    )?;
    let Some(go) = wait_for_go(cfg.go_fd) else {
        return Ok(());
    };
    let net = parse_go(&go).ok_or_else(|| StepError {
        what: format!("understanding the launcher's go message {go:?}"),
        errno: Errno::EINVAL,
    })?;

    // 2. The cgroup namespace, now that we are in the container's cgroup.
    let began = trace::start();
    ctx(nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP), || {
        "creating the cgroup namespace".into()
    })?;
    trace::step("namespace", began, || {
        let show = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        format!(
            "cgroup inode {} (host {}) by unshare(CLONE_NEWCGROUP) in the container's cgroup",
            show(crate::namespaces::inode("self", "cgroup")),
            show(cfg.host_cgroup_ns)
        )
    });
    mark(cfg, tag::NAMESPACES);

    // 3. Private mounts first, so nothing below can reach the host's mount table.
    rootfs::make_private()?;
    let began = trace::start();
    ctx(nix::unistd::sethostname(&cfg.hostname), || {
        format!("setting the hostname to {}", cfg.hostname)
    })?;
    trace::step("hostname", began, || {
        format!("{} (in the new UTS namespace)", cfg.hostname)
    });
    let began = trace::start();
    guest_net::bring_up_loopback().map_err(net_step_error)?;
    trace::step("net.lo", began, || "lo up in the new network namespace".into());
    if let Some(plan) = &net {
        let began = trace::start();
        guest_net::configure(plan, true).map_err(net_step_error)?;
        trace::step("net.guest", began, || {
            format!(
                "{} {}/{} gateway {}",
                plan.interface,
                plan.address,
                plan.prefix_len,
                plan.gateway.map_or("-".to_string(), |g| g.to_string())
            )
        });
    }

    // 4. The root filesystem.
    rootfs::mount_overlay(&cfg.overlay_options, &cfg.rootfs)?;
    let plan_fd = ctx(
        nix::fcntl::open(&cfg.plan_path, OFlag::O_RDONLY, nix::sys::stat::Mode::empty()),
        || format!("opening the plan {}", cfg.plan_path.display()),
    )?
    .into_raw_fd();
    rootfs::pivot(&cfg.rootfs)?;
    mounts::api_filesystems()?;
    devices::setup(&Path::new(OLD_ROOT).join("dev"), cfg.rootless)?;
    rootfs::bind_volumes(&cfg.volumes, cfg.rootless)?;
    mounts::protect()?;
    rootfs::detach_old_root()?;
    mark(cfg, tag::ROOTFS);

    // 5. Only the plan and ready descriptors (and stdio) survive exec.
    mark_fds_cloexec()?;
    for fd in [plan_fd, cfg.ready_fd] {
        // SAFETY: both descriptors are open in this process (opened above / inherited).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        ctx(fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty())), || {
            format!("passing descriptor {} to the guest program", borrowed.as_raw_fd())
        })?;
    }
    let began = trace::start();
    caps::restrict_to(caps::DEFAULT_CAPS, cfg.last_cap).map_err(|(what, errno)| StepError {
        what: what.into(),
        errno,
    })?;
    trace::step("capabilities", began, || {
        format!(
            "kept {}; {}",
            caps::names(caps::DEFAULT_CAPS),
            caps::sets_of_self()
        )
    });
    let began = trace::start();
    cfg.filters.install().map_err(|e| StepError {
        what: format!("installing the seccomp filter ({e})"),
        errno: Errno::EINVAL,
    })?;
    trace::step("seccomp", began, || {
        let (programs, instructions) = cfg.filters.size();
        format!(
            "{programs} filters, {instructions} BPF instructions ({} bytes), {} syscalls refused \
             with EPERM, clone3 with ENOSYS; no_new_privs set",
            instructions * std::mem::size_of::<libc::sock_filter>(),
            crate::seccomp::Filters::refused_syscalls()
        )
    });
    let mut env = cfg.init_env.clone();
    let plan_env = format!("{}=fd:{plan_fd}", sandbox_protocol::PLAN_ENV);
    env.push(CString::new(plan_env).map_err(|_| StepError {
        what: "building the environment".into(),
        errno: Errno::EINVAL,
    })?);
    mark(cfg, tag::EXEC);
    trace::note("exec", || {
        format!(
            "execve {} {} (plan fd {plan_fd}, ready fd {})",
            cfg.init_path.to_string_lossy(),
            cfg.init_argv
                .iter()
                .skip(1)
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            cfg.ready_fd
        )
    });
    let err = nix::unistd::execve(&cfg.init_path, &cfg.init_argv, &env).unwrap_err();
    Err(StepError {
        what: format!("executing {}", cfg.init_path.to_string_lossy()),
        errno: err,
    })
}

/// Marks every descriptor from 3 up close-on-exec, so nothing the launcher had open leaks into
/// the container.
fn mark_fds_cloexec() -> Step {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        // Kernels before 5.11 lack the flag: set it one descriptor at a time.
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            let max = nix::unistd::sysconf(nix::unistd::SysconfVar::OPEN_MAX)
                .ok()
                .flatten()
                .unwrap_or(1024)
                .min(1 << 20) as RawFd;
            for fd in 3..max {
                // SAFETY: F_SETFD on a descriptor number that may not be open: at worst EBADF.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
            Ok(())
        }
        Err(errno) => Err(StepError {
            what: "marking descriptors close-on-exec".into(),
            errno,
        }),
    }
}

/// The interface set-up is the guest program's own (`sandbox_protocol::ifconfig`), run here while
/// the first process still holds CAP_NET_ADMIN; its errors become a step error with their errno.
fn net_step_error(err: guest_net::NetError) -> StepError {
    use guest_net::NetError;
    let (what, errno) = match &err {
        NetError::Socket(errno) => ("opening a socket for interface configuration".to_string(), *errno),
        NetError::Ioctl {
            what,
            interface,
            source,
        } => (
            format!("{what} on {interface}"),
            source
                .raw_os_error()
                .map_or(nix::errno::Errno::EIO, nix::errno::Errno::from_raw),
        ),
        NetError::BadName(_) | NetError::NoInterface(_) => (err.to_string(), nix::errno::Errno::ENODEV),
    };
    StepError { what, errno }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_messages_round_trip() {
        assert_eq!(parse_go(&go_message(None)), Some(None));
        let plan = NetPlan {
            interface: "eth0".into(),
            address: Ipv4Addr::new(10, 200, 0, 2),
            prefix_len: 30,
            gateway: Some(Ipv4Addr::new(10, 200, 0, 1)),
        };
        assert_eq!(parse_go(&go_message(Some(&plan))), Some(Some(plan)));
        assert_eq!(parse_go("stop"), None);
    }
}
