//! The container's first process, from `clone` to `execve` of the workload.
//!
//! It starts in the namespaces `clone` created, with a copy of the launcher's memory, and then,
//! in this fixed order (each step a function below):
//! 1. asks for SIGKILL when the launcher dies, and waits for the launcher's "go" (sent once the
//!    launcher has written the id maps, put it in its cgroup, and moved in the veth);
//! 2. joins the namespaces given by path; opens what it needs from the host while it still has
//!    the launcher's host uid (the plan file; with a user namespace under a root launcher, the
//!    overlay's directories and the volumes' sources, which the namespace's root may not reach);
//!    becomes the root of its user namespace (asking again to die with the launcher: the
//!    kernel forgets that on a change of host uid); unshares its cgroup namespace (rooted at the
//!    container's cgroup) and starts a session of its own — "namespaces ready";
//! 3. makes all mounts private, sets the hostname, brings up `lo` (and `eth0`);
//! 4. assembles the root: the overlay or the bundle's directory, the plan's mounts in order, the
//!    device nodes, the terminal; runs the createContainer hooks; `pivot_root` and detaches the
//!    old root; sets the root's propagation, masks and write-protects paths, makes the root
//!    read-only if asked — "rootfs ready";
//! 5. writes the sysctls, the OOM score and the resource limits, reports "created", and waits
//!    for "start" (a pipe for `sandbox run`, the state directory's FIFO for `sandbox-runtime`);
//! 6. runs the startContainer hooks, installs the seccomp filter, becomes the workload's user
//!    with its capability sets, and executes it — "exec".
//!
//! Progress and failures go to the launcher through the status pipe, which is close-on-exec:
//! end-of-file after "exec" means the workload is running. Nothing here returns: the process
//! either executes the workload or exits.

use crate::caps;
use crate::hooks::{self, Hook};
use crate::identity::{self, Identity};
use crate::namespaces::{self, Join};
use crate::rlimits;
use crate::rootfs::{self, RootSource};
use crate::seccomp::Filters;
use crate::sys::{ctx, io_step, Step, StepError};
use crate::terminal::{self, Pty};
use crate::{devices, mounts, protect};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sched::CloneFlags;
use sandbox_protocol::isolation::{DevicePlan, MountPlan};
use sandbox_protocol::trace;
use sandbox_protocol::{ifconfig, NetPlan};
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// How the first process learns it may start the workload.
#[derive(Debug)]
pub enum StartWait {
    /// A `start` line on the go pipe (`sandbox run`: the launcher stays).
    Pipe,
    /// One byte on this FIFO, opened read-write by the launcher (`sandbox-runtime start`
    /// writes it from another process, after this one's launcher has exited).
    Fifo(OwnedFd),
}

/// What the first process executes.
#[derive(Debug)]
pub enum ExecTarget {
    /// `sandbox-guest init`, root with the default capabilities, reading its plan from `plan`.
    GuestInit {
        path: CString,
        argv: Vec<CString>,
        env: Vec<CString>,
        plan: PathBuf,
    },
    /// The workload itself, as the plan's user (OCI `process`).
    Direct {
        argv: Vec<CString>,
        env: Vec<CString>,
        /// The `PATH` the program name is searched in.
        path_var: String,
        cwd: CString,
        identity: Identity,
    },
    /// Nothing (an OCI bundle without `process`): exit 0 once started.
    Nothing,
}

/// Everything the first process needs, prepared by the launcher before `clone`.
#[derive(Debug)]
pub struct ChildConfig {
    pub rootless: bool,
    /// A new user namespace (its `setgroups` is denied when `rootless`).
    pub user_namespace: bool,
    pub joins: Vec<Join>,
    pub new_cgroup_namespace: bool,
    /// Whether the container has a mount namespace; without one nothing is mounted.
    pub mount_namespace: bool,
    /// Set when the container has a UTS namespace.
    pub hostname: Option<String>,
    pub root: RootSource,
    /// Where the root is assembled (the overlay's mount point, or the bundle's root directory).
    pub rootfs: PathBuf,
    pub readonly_root: bool,
    pub root_propagation: Option<nix::mount::MsFlags>,
    pub mounts: Vec<MountPlan>,
    /// Create the standard device nodes and `devices` in the container's /dev.
    pub create_devices: bool,
    pub devices: Vec<DevicePlan>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// `/proc/sys/...` file and value.
    pub sysctl: Vec<(String, String)>,
    /// A pty for the workload; the master goes to this connected console socket (`None`: the
    /// launcher gets it over the status pipe's sibling, see `console_fd`).
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
    pub console_socket: Option<OwnedFd>,
    pub oom_score_adj: Option<i32>,
    pub rlimits: Vec<rlimits::Resolved>,
    pub create_container_hooks: Vec<Hook>,
    pub start_container_hooks: Vec<Hook>,
    /// The OCI state JSON given to hooks, with `"status":"@STATUS@"` and `"pid":0` to fill in.
    pub hook_state: String,
    pub start: StartWait,
    /// Stay tied to the launcher past "created" (`sandbox run`); otherwise the launcher exits
    /// after "created" and this process must outlive it.
    pub attached: bool,
    /// Replace stdin with `/dev/null` (`sandbox run` without `-i`).
    pub stdin_null: bool,
    pub filters: Option<Filters>,
    pub caps: caps::Sets,
    pub last_cap: u32,
    pub no_new_privileges: bool,
    pub exec: ExecTarget,
    /// Descriptors that survive `execve` besides stdio (OCI `--preserve-fds`: 3..3+n).
    pub preserve_fds: u32,
    /// The launcher's cgroup namespace inode, printed next to the container's by `--trace`.
    pub host_cgroup_ns: Option<u64>,
    /// Read end of the go pipe.
    pub go_fd: RawFd,
    /// The launcher's ends of the pipes, which this process's copy of the launcher's
    /// descriptors includes: closed first, so a launcher that dies before "go" is an end of
    /// file here, not a wait forever.
    pub launcher_ends: Vec<RawFd>,
    /// Write end of the status pipe (close-on-exec).
    pub status_fd: RawFd,
    /// Write end of the ready pipe, inherited by the guest program (`sandbox run`).
    pub ready_fd: Option<RawFd>,
    /// Host paths opened before becoming the user namespace's root (see [`hold_host_paths`]):
    /// the overlay's parts, then the overlay's root once mounted, and the volumes' sources.
    pub held: HostDescriptors,
}

/// What the first process holds open from the host (all close-on-exec). Empty in the launcher.
#[derive(Debug, Default)]
pub struct HostDescriptors {
    overlay: Option<crate::userns_overlay::Held>,
    /// The mounted overlay's root, which `rootfs` names as `/proc/self/fd/N`.
    root: Option<OwnedFd>,
    /// Bind-mount sources, which the plan's mounts name as `/proc/self/fd/N`.
    sources: Vec<OwnedFd>,
}

/// Status-pipe record tags.
pub mod tag {
    pub const NAMESPACES: &str = "N";
    pub const ROOTFS: &str = "R";
    pub const CREATED: &str = "C";
    pub const EXEC: &str = "X";
    pub const ERROR: &str = "E";
}

/// The go message: its network part (`None`: loopback only) and the first process's pid as
/// the launcher sees it (for the hooks' state).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Go {
    pub net: Option<NetPlan>,
    pub pid: i32,
}

/// The go line for `go`.
pub fn go_message(go: &Go) -> String {
    format!("go {}\n", serde_json::to_string(go).unwrap_or_default())
}

fn parse_go(line: &str) -> Option<Go> {
    serde_json::from_str(line.trim_end().strip_prefix("go ")?).ok()
}

fn write_all(fd: RawFd, mut bytes: &[u8]) {
    if fd < 0 {
        return;
    }
    // SAFETY: `fd` is the status pipe's write end, open until exec or until closed after
    // "created"; a write to a closed descriptor only fails with EBADF.
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

/// Reads one line from the go pipe; `None` when the launcher closed it first.
fn read_line(fd: RawFd) -> Option<String> {
    // SAFETY: `fd` is the go pipe's read end, open for the child's whole life.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(fd, &mut byte) {
            Ok(0) => return None,
            Ok(_) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into_owned()),
            Ok(_) => line.push(byte[0]),
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

/// The first process's body; never returns.
pub fn main(cfg: &mut ChildConfig) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| setup_and_exec(cfg)));
    let (message, code) = match result {
        Ok(Ok(Ending::Quietly)) => (None, 1),
        Ok(Ok(Ending::Exit(code))) => (None, code),
        Ok(Err(e)) => (Some(e.to_string()), 1),
        Err(_) => (Some("the container set-up panicked".to_string()), 1),
    };
    if let Some(m) = message {
        report(cfg, tag::ERROR, &m);
        if !cfg.attached {
            // Past "created" nobody reads the status pipe: the container's stderr is where
            // whoever runs it looks.
            eprintln!("sandbox-runtime: {m}");
        }
    }
    // SAFETY: _exit ends this process at once, without running the launcher's atexit handlers
    // or destructors, which belong to the launcher's copy of this memory.
    unsafe { libc::_exit(code) }
}

/// How the first process ends when it does not execute a workload.
enum Ending {
    /// The launcher went away before "go" or "start": nothing to report.
    Quietly,
    /// Exit with this status (an OCI bundle without a process: 0).
    Exit(i32),
}

fn setup_and_exec(cfg: &mut ChildConfig) -> Result<Ending, StepError> {
    for &fd in &cfg.launcher_ends {
        // SAFETY: closes this process's copy of a descriptor only the launcher uses.
        unsafe { libc::close(fd) };
    }
    let Some(go) = wait_for_go(cfg)? else {
        return Ok(Ending::Quietly);
    };
    if cfg.stdin_null {
        detach_stdin()?;
    }
    enter_namespaces(cfg)?;
    if !launcher_alive(cfg) {
        return Ok(Ending::Quietly);
    }
    mark(cfg, tag::NAMESPACES);
    set_up_identity_of_the_box(cfg, &go)?;
    let pty = assemble_root(cfg, &go)?;
    set_kernel_knobs(cfg)?;
    lock_down(cfg)?;
    mark(cfg, tag::ROOTFS);
    if !report_created(cfg)? || !wait_for_start(cfg)? {
        return Ok(Ending::Quietly);
    }
    hooks::run(
        "startContainer",
        &cfg.start_container_hooks,
        &hook_state(cfg, &go, "running"),
    )
    .map_err(|what| StepError {
        what,
        errno: Errno::EINVAL,
    })?;
    exec_workload(cfg, pty)
}

/// Replaces stdin with `/dev/null`, so the workload reads nothing of the launcher's terminal
/// unless asked (`-i`).
fn detach_stdin() -> Step {
    let null = ctx(
        nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
        || "opening /dev/null for stdin".into(),
    )?;
    // SAFETY: descriptor 0 is this process's own stdin; dup2 replaces it atomically.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(StepError {
            what: "making /dev/null the stdin".into(),
            errno: Errno::last(),
        });
    }
    Ok(())
}

/// Step 1: die with the launcher; wait for it to finish its part.
fn wait_for_go(cfg: &ChildConfig) -> Result<Option<Go>, StepError> {
    ctx(
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL),
        || "asking for SIGKILL on the launcher's death".into(),
    )?;
    let Some(line) = read_line(cfg.go_fd) else {
        return Ok(None);
    };
    parse_go(&line).map(Some).ok_or_else(|| StepError {
        what: format!("understanding the launcher's go message {line:?}"),
        errno: Errno::EINVAL,
    })
}

/// Step 2: the namespaces given by path, root of the user namespace, the cgroup namespace, a
/// session of its own.
fn enter_namespaces(cfg: &mut ChildConfig) -> Step {
    for join in cfg
        .joins
        .iter()
        .filter(|j| j.kind != sandbox_protocol::isolation::NamespaceKind::Pid)
    {
        let began = trace::start();
        ctx(namespaces::enter(join), || {
            format!("joining the {} namespace {}", join.kind.proc_name(), join.path)
        })?;
        trace::step("namespace", began, || {
            format!("{} joined from {} by setns", join.kind.proc_name(), join.path)
        });
    }
    hold_host_paths(cfg)?;
    if cfg.user_namespace {
        // The first process still carries the launcher's host uid, which the namespace's map
        // need not contain (then it is the overflow uid, and cannot create files): become the
        // namespace's root, as its maps say.
        if !cfg.rootless {
            ctx(nix::unistd::setgroups(&[]), || {
                "dropping supplementary groups in the user namespace".into()
            })?;
        }
        let root_gid = nix::unistd::Gid::from_raw(0);
        let root_uid = nix::unistd::Uid::from_raw(0);
        ctx(nix::unistd::setresgid(root_gid, root_gid, root_gid), || {
            "becoming group 0 of the user namespace (is gid 0 in linux.gidMappings?)".into()
        })?;
        ctx(nix::unistd::setresuid(root_uid, root_uid, root_uid), || {
            "becoming root of the user namespace (is uid 0 in linux.uidMappings?)".into()
        })?;
        // Becoming another host uid (a root launcher's `--userns`) made the kernel clear the
        // parent-death signal, as it does on any change of credentials: ask for it again. A
        // launcher that died in between is caught by `launcher_alive` just after.
        ctx(
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL),
            || "asking again for SIGKILL on the launcher's death".into(),
        )?;
    }
    if cfg.new_cgroup_namespace {
        let began = trace::start();
        ctx(nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP), || {
            "creating the cgroup namespace".into()
        })?;
        trace::step("namespace", began, || {
            let show = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
            format!(
                "cgroup inode {} (host {}) by unshare(CLONE_NEWCGROUP) in the container's cgroup",
                show(namespaces::inode("self", "cgroup")),
                show(cfg.host_cgroup_ns)
            )
        });
    }
    // A session of its own: the container shares no session or process group with the host
    // (no signals to the launcher's group, no TIOCSTI into the host's terminal).
    ctx(nix::unistd::setsid().map(drop), || {
        "starting a new session".into()
    })
}

/// Whether the launcher is still there: the go pipe's write end, which only it holds, is open.
fn launcher_alive(cfg: &ChildConfig) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: `go_fd` is the go pipe's read end, open for the child's whole life.
    let fd = unsafe { BorrowedFd::borrow_raw(cfg.go_fd) };
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => !fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLHUP)),
        Err(_) => true,
    }
}

/// Step 2b, after joining namespaces and before becoming the user namespace's root: opens what
/// the set-up needs from the host while this process still has the launcher's host uid. The plan
/// file lives in the host's run directory (opened now, read by the guest program after exec).
/// When the launcher is root and the container has a user namespace, its root is an
/// unprivileged host id that cannot walk root's 0700 directories (the image store, the run
/// directory, a volume under /root): the overlay's parts and the bind mounts' sources are opened
/// too, and used through their descriptors.
fn hold_host_paths(cfg: &mut ChildConfig) -> Step {
    if let ExecTarget::GuestInit { plan, .. } = &cfg.exec {
        let fd = ctx(
            nix::fcntl::open(plan, OFlag::O_RDONLY, nix::sys::stat::Mode::empty()),
            || format!("opening the plan {}", plan.display()),
        )?;
        PLAN_FD.store(fd.into_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    }
    if let RootSource::UserNamespaceOverlay(dirs) = &cfg.root {
        if cfg.mount_namespace {
            cfg.held.overlay = Some(crate::userns_overlay::hold(dirs, &cfg.rootfs)?);
        }
    }
    if !cfg.user_namespace || cfg.rootless {
        return Ok(());
    }
    for m in cfg
        .mounts
        .iter_mut()
        .filter(|m| m.is_bind() && m.source.starts_with('/'))
    {
        let fd = nix::fcntl::open(
            m.source.as_str(),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| StepError {
            what: format!(
                "bind mount source {} (for {}) is not there",
                m.source, m.destination
            ),
            errno,
        })?;
        m.source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        cfg.held.sources.push(fd);
    }
    Ok(())
}

/// Step 3: private mounts, hostname, network.
fn set_up_identity_of_the_box(cfg: &ChildConfig, go: &Go) -> Step {
    if cfg.mount_namespace {
        // Private first, so nothing below can reach the host's mount table.
        rootfs::make_private()?;
    }
    if let Some(name) = &cfg.hostname {
        let began = trace::start();
        ctx(nix::unistd::sethostname(name), || {
            format!("setting the hostname to {name}")
        })?;
        trace::step("hostname", began, || format!("{name} (in the new UTS namespace)"));
    }
    if let Some(plan) = &go.net {
        let began = trace::start();
        ifconfig::bring_up_loopback().map_err(net_step_error)?;
        trace::step("net.lo", began, || "lo up in the new network namespace".into());
        let began = trace::start();
        ifconfig::configure(plan, true).map_err(net_step_error)?;
        trace::step("net.guest", began, || {
            format!(
                "{} {}/{} gateway {}",
                plan.interface,
                plan.address,
                plan.prefix_len,
                plan.gateway.map_or("-".to_string(), |g| g.to_string())
            )
        });
    } else if cfg.attached {
        // `sandbox run`'s network namespace gets its loopback up even without a link.
        let began = trace::start();
        ifconfig::bring_up_loopback().map_err(net_step_error)?;
        trace::step("net.lo", began, || "lo up in the new network namespace".into());
    }
    Ok(())
}

/// Step 4: the root filesystem; returns the terminal when the workload gets one.
fn assemble_root(cfg: &mut ChildConfig, go: &Go) -> Result<Option<Pty>, StepError> {
    if !cfg.mount_namespace {
        // Without a mount namespace of its own every mount would be the host's: the container
        // only gets its root directory.
        let root = cfg.rootfs.clone();
        ctx(nix::unistd::chroot(&root), || {
            format!("chroot into {}", root.display())
        })?;
        ctx(nix::unistd::chdir("/"), || "changing into the new root".into())?;
        return Ok(None);
    }
    match cfg.held.overlay.take() {
        Some(overlay) => {
            // From here on the root is reached through the overlay's own descriptor: the
            // namespace's root cannot walk the host path to the mount point.
            let root = crate::userns_overlay::mount(overlay)?;
            cfg.rootfs = PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
            cfg.held.root = Some(root);
        }
        None => rootfs::mount_root(&cfg.root, &cfg.rootfs)?,
    }
    for m in &cfg.mounts {
        mounts::mount_one(&cfg.rootfs, m, cfg.user_namespace)?;
    }
    if cfg.create_devices {
        devices::setup(&cfg.rootfs, &cfg.devices, cfg.user_namespace)?;
    }
    let pty = if cfg.terminal {
        Some(open_terminal(cfg)?)
    } else {
        None
    };
    hooks::run(
        "createContainer",
        &cfg.create_container_hooks,
        &hook_state(cfg, go, "created"),
    )
    .map_err(|what| StepError {
        what,
        errno: Errno::EINVAL,
    })?;
    rootfs::pivot(&cfg.rootfs)?;
    rootfs::detach_old_root()?;
    if let Some(p) = cfg.root_propagation {
        crate::sys::propagation(Path::new("/"), p)?;
    }
    Ok(pty)
}

/// Step 4b (after the sysctls, which need /proc/sys writable): masked and read-only paths, and
/// a read-only root.
fn lock_down(cfg: &ChildConfig) -> Step {
    if !cfg.mount_namespace {
        return Ok(());
    }
    protect::mask(&cfg.masked_paths)?;
    protect::read_only(&cfg.readonly_paths)?;
    if cfg.readonly_root {
        crate::sys::remount_read_only(Path::new("/"))?;
    }
    Ok(())
}

/// The descriptor of the plan file init reads (GuestInit only).
static PLAN_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Opens the pty, sends its master to the console socket, and puts the slave on /dev/console.
fn open_terminal(cfg: &mut ChildConfig) -> Result<Pty, StepError> {
    let pty = terminal::open(&cfg.rootfs, cfg.console_size)?;
    if let Some(socket) = cfg.console_socket.take() {
        terminal::send_master(socket.as_raw_fd(), &pty.master)?;
    }
    let console = crate::secure_path::resolve(&cfg.rootfs, "/dev/console", crate::secure_path::Leaf::File)?;
    crate::sys::bind(&pty.slave_path, &console.path(), false)?;
    // The terminal is the process's stdio from now on: the stdio `create` was given is let go
    // at once, so whoever waits for it to close (containerd's shim, conmon) is not held up
    // until `start`.
    terminal::become_stdio(&pty.slave)?;
    if let ExecTarget::Direct { identity, .. } = &cfg.exec {
        // The workload's user owns its terminal, as login does.
        let _ = nix::unistd::fchown(
            &pty.slave,
            Some(nix::unistd::Uid::from_raw(identity.uid)),
            Some(nix::unistd::Gid::from_raw(identity.gid)),
        );
    }
    Ok(pty)
}

/// Step 5a: sysctls, OOM score, resource limits.
fn set_kernel_knobs(cfg: &ChildConfig) -> Step {
    for (file, value) in &cfg.sysctl {
        std::fs::write(file, value).map_err(|e| io_step(format!("writing {value} to {file}"), &e))?;
    }
    if let Some(adj) = cfg.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| io_step(format!("setting oom_score_adj to {adj}"), &e))?;
    }
    rlimits::apply(&cfg.rlimits).map_err(|(what, errno)| StepError { what, errno })
}

/// Step 5b: tells the launcher the container is created. A detached container (OCI) stops
/// dying with its launcher now, and checks the launcher is still the one that made it: if it
/// died meanwhile, nobody knows of this process, and it ends. Returns whether to go on.
fn report_created(cfg: &mut ChildConfig) -> Result<bool, StepError> {
    if !cfg.attached {
        let parent = nix::unistd::getppid();
        ctx(nix::sys::prctl::set_pdeathsig(None), || {
            "clearing the parent-death signal".into()
        })?;
        // In a new PID namespace the launcher is outside it: getppid() is 0 until it exits.
        if nix::unistd::getppid() != parent {
            return Ok(false);
        }
    }
    mark(cfg, tag::CREATED);
    if !cfg.attached {
        // SAFETY: closes the status pipe's write end; nobody reads it after "created".
        unsafe { libc::close(cfg.status_fd) };
        cfg.status_fd = -1;
    }
    Ok(true)
}

/// Step 5c: waits for "start". Returns false when the launcher went away instead.
fn wait_for_start(cfg: &ChildConfig) -> Result<bool, StepError> {
    match &cfg.start {
        StartWait::Pipe => Ok(read_line(cfg.go_fd).is_some_and(|l| l == "start")),
        StartWait::Fifo(fd) => {
            let mut byte = [0u8; 1];
            loop {
                match nix::unistd::read(fd, &mut byte) {
                    Ok(1) => return Ok(true),
                    Ok(_) => return Ok(false),
                    Err(Errno::EINTR) => {}
                    Err(errno) => {
                        return Err(StepError {
                            what: "waiting for start on the exec FIFO".into(),
                            errno,
                        })
                    }
                }
            }
        }
    }
}

/// The hooks' state JSON with `status` and this process's host pid.
fn hook_state(cfg: &ChildConfig, go: &Go, status: &str) -> String {
    cfg.hook_state
        .replace("\"@STATUS@\"", &format!("\"{status}\""))
        .replace("\"pid\":0", &format!("\"pid\":{}", go.pid))
}

/// Step 6: seccomp, user, capabilities, and `execve`.
fn exec_workload(cfg: &mut ChildConfig, pty: Option<Pty>) -> Result<Ending, StepError> {
    if matches!(cfg.exec, ExecTarget::Nothing) {
        return Ok(Ending::Exit(0));
    }
    keep_descriptors(cfg)?;
    if !cfg.no_new_privileges {
        // Without no_new_privs the kernel wants CAP_SYS_ADMIN to install a filter: now,
        // before the capabilities go.
        install_seccomp(cfg)?;
    }
    let began = trace::start();
    caps::drop_bounding(cfg.caps.bounding, cfg.last_cap).map_err(|(what, errno)| StepError {
        what: what.into(),
        errno,
    })?;
    if let ExecTarget::Direct { identity, cwd, .. } = &cfg.exec {
        identity::switch(identity, !(cfg.user_namespace && cfg.rootless))?;
        ctx(nix::unistd::chdir(cwd.as_c_str()), || {
            format!("changing into the working directory {}", cwd.to_string_lossy())
        })?;
    }
    caps::set(&cfg.caps, cfg.last_cap).map_err(|(what, errno)| StepError {
        what: what.into(),
        errno,
    })?;
    trace::step("capabilities", began, || {
        format!(
            "kept {}; {}",
            caps::names(cfg.caps.effective),
            caps::sets_of_self()
        )
    });
    if cfg.no_new_privileges {
        ctx(nix::sys::prctl::set_no_new_privs(), || {
            "setting no_new_privs".into()
        })?;
        install_seccomp(cfg)?;
    }
    reset_signals();
    drop(pty);
    mark(cfg, tag::EXEC);
    let (path, argv, env) = exec_args(cfg)?;
    trace::note("exec", || {
        format!(
            "execve {} {}",
            path.to_string_lossy(),
            argv.iter()
                .skip(1)
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        )
    });
    let err = nix::unistd::execve(&path, &argv, &env).unwrap_err();
    let (code, why) = match err {
        Errno::ENOENT => (sandbox_protocol::EXIT_NOT_FOUND, "no such file or directory"),
        Errno::EACCES | Errno::ENOEXEC => (
            sandbox_protocol::EXIT_NOT_EXECUTABLE,
            "permission denied or not an executable",
        ),
        _ => (sandbox_protocol::EXIT_NOT_EXECUTABLE, err.desc()),
    };
    let message = format!("executing {}: {why}", path.to_string_lossy());
    report(cfg, tag::ERROR, &message);
    if !cfg.attached {
        eprintln!("sandbox-runtime: {message}");
    }
    Ok(Ending::Exit(code))
}

fn install_seccomp(cfg: &ChildConfig) -> Step {
    let Some(filters) = &cfg.filters else {
        return Ok(());
    };
    let began = trace::start();
    filters.install().map_err(|e| StepError {
        what: format!("installing the seccomp filter ({e})"),
        errno: Errno::EINVAL,
    })?;
    trace::step("seccomp", began, || {
        let (programs, instructions) = filters.size();
        format!(
            "{}; {programs} filters, {instructions} BPF instructions ({} bytes){}",
            filters.profile,
            instructions * std::mem::size_of::<libc::sock_filter>(),
            if cfg.no_new_privileges {
                "; no_new_privs set"
            } else {
                ""
            }
        )
    });
    Ok(())
}

/// Marks every descriptor from 3 up close-on-exec except the ones the workload keeps (the
/// preserved ones, and for the guest program its plan and ready descriptors).
fn keep_descriptors(cfg: &ChildConfig) -> Step {
    let first = 3 + cfg.preserve_fds;
    mark_cloexec_from(first)?;
    let mut keep: Vec<RawFd> = Vec::new();
    if matches!(cfg.exec, ExecTarget::GuestInit { .. }) {
        keep.push(PLAN_FD.load(std::sync::atomic::Ordering::Relaxed));
        keep.extend(cfg.ready_fd);
    }
    for fd in (3..first as RawFd).chain(keep) {
        // SAFETY: borrowing a descriptor number only to change its flags; an unopened one
        // fails with EBADF, reported below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        ctx(fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty())), || {
            format!("passing descriptor {fd} to the workload")
        })?;
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec, so nothing the launcher had open
/// leaks into the container.
pub(crate) fn mark_cloexec_from(first: u32) -> Step {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        // Kernels before 5.11 lack the flag: set it one descriptor at a time.
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            let max = nix::unistd::sysconf(nix::unistd::SysconfVar::OPEN_MAX)
                .ok()
                .flatten()
                .unwrap_or(1024)
                .min(1 << 20) as RawFd;
            for fd in first as RawFd..max {
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

/// Every signal back to its default action and none blocked: the launcher's Rust runtime
/// ignores SIGPIPE and may have handlers, none of which the workload should inherit.
pub(crate) fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting SIG_DFL takes no pointers of ours; invalid numbers fail harmlessly.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// The program, argv and environment to execute.
fn exec_args(cfg: &ChildConfig) -> Result<(CString, Vec<CString>, Vec<CString>), StepError> {
    let nul = |what: &str| StepError {
        what: format!("{what} contains a NUL byte"),
        errno: Errno::EINVAL,
    };
    match &cfg.exec {
        ExecTarget::GuestInit { path, argv, env, .. } => {
            let mut env = env.clone();
            let plan_fd = PLAN_FD.load(std::sync::atomic::Ordering::Relaxed);
            env.push(
                CString::new(format!("{}=fd:{plan_fd}", sandbox_protocol::PLAN_ENV))
                    .map_err(|_| nul("the environment"))?,
            );
            Ok((path.clone(), argv.clone(), env))
        }
        ExecTarget::Direct {
            argv, env, path_var, ..
        } => {
            let program = argv
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default();
            let path = find_program(&program, path_var);
            Ok((
                CString::new(path).map_err(|_| nul("the program"))?,
                argv.clone(),
                env.clone(),
            ))
        }
        ExecTarget::Nothing => Err(StepError {
            what: "no process to execute".into(),
            errno: Errno::EINVAL,
        }),
    }
}

/// The execvp-style search: a name with `/` as it is, else the first executable file among
/// `PATH`'s directories (or the name itself, for `execve` to fail on).
pub(crate) fn find_program(program: &str, path_var: &str) -> String {
    if program.contains('/') {
        return program.to_string();
    }
    path_var
        .split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .find(|candidate| nix::unistd::access(candidate.as_str(), nix::unistd::AccessFlags::X_OK).is_ok())
        .unwrap_or_else(|| program.to_string())
}

/// Interface set-up errors become a step error with their errno.
fn net_step_error(err: ifconfig::NetError) -> StepError {
    use ifconfig::NetError;
    let (what, errno) = match &err {
        NetError::Socket(errno) => ("opening a socket for interface configuration".to_string(), *errno),
        NetError::Ioctl {
            what,
            interface,
            source,
        } => (
            format!("{what} on {interface}"),
            source.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
        ),
        NetError::BadName(_) | NetError::NoInterface(_) => (err.to_string(), Errno::ENODEV),
    };
    StepError { what, errno }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn go_messages_round_trip() {
        let go = Go { net: None, pid: 7 };
        assert_eq!(parse_go(&go_message(&go)), Some(go));
        let go = Go {
            net: Some(NetPlan {
                interface: "eth0".into(),
                address: Ipv4Addr::new(10, 200, 0, 2),
                prefix_len: 30,
                gateway: Some(Ipv4Addr::new(10, 200, 0, 1)),
            }),
            pid: 42,
        };
        assert_eq!(parse_go(&go_message(&go)), Some(go));
        assert_eq!(parse_go("stop"), None);
    }

    #[test]
    fn programs_are_found_on_the_path() {
        assert_eq!(find_program("/bin/sh", "/nowhere"), "/bin/sh");
        assert_eq!(find_program("sh", "/nowhere:/bin"), "/bin/sh");
        assert_eq!(find_program("no-such-program", "/bin"), "no-such-program");
    }
}
