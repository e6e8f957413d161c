//! The launcher's side of starting a container, in named steps: [`spawn`] checks everything
//! that can be refused, creates the cgroup, clones the first process into its namespaces, writes
//! its id maps and moves it into the cgroup; [`Spawned::go`] lets it set itself up until it is
//! "created"; [`Spawned::start`] releases the workload; [`Spawned::wait`] waits for its end.
//!
//! Between `spawn` and `go` the caller adds what needs the first process's pid, such as the
//! network link (`sandbox run --net host`). A caller that does not stay (the OCI `create`)
//! hands the process and cgroup over with [`Spawned::detach`]; another process then starts it
//! through the state directory's FIFO and removes it by the recorded cgroup.

use crate::caps;
use crate::cgroups::{self, Cgroup, Placement};
use crate::child::{self, ChildConfig, ExecTarget, Go, StartWait};
use crate::hooks::{self, Hook};
use crate::identity::Identity;
use crate::mounts;
use crate::namespaces;
use crate::process::{self, ChildProcess, Progress, SignalForwarder, StatusReader};
use crate::rlimits;
use crate::rootfs::RootSource;
use crate::seccomp;
use crate::terminal;
use crate::ContainerError;
use nix::unistd::Pid;
use sandbox_protocol::isolation::NamespaceKind;
use sandbox_protocol::trace;
use sandbox_protocol::{NetPlan, Plan};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// What the container's first process executes in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `sandbox-guest init` from the image, reading `plan` (a file in the run directory), with
    /// `path_var` as its PATH: the same PID 1 as in a VM (`sandbox run`).
    GuestInit { plan: PathBuf, path_var: String },
    /// The plan's command itself, as its user (an OCI bundle's `process`).
    Direct,
    /// No process: the container exits once started (an OCI bundle without `process`).
    Nothing,
}

/// How the workload is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// By [`Spawned::start`], from the same launcher.
    Pipe,
    /// By another process writing one byte to this FIFO (see [`start_fifo`]).
    Fifo(PathBuf),
}

/// The OCI hooks the container's own steps run.
#[derive(Debug, Clone, Default)]
pub struct ContainerHooks {
    pub create_runtime: Vec<Hook>,
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    /// The state JSON given to them, with `"status":"@STATUS@"` and `"pid":0` to fill in.
    pub state: String,
}

/// Everything one container launch needs beyond its [`Plan`].
#[derive(Debug, Clone)]
pub struct Launch {
    pub id: String,
    pub root: RootSource,
    /// Where the root is assembled.
    pub rootfs: PathBuf,
    pub placement: Placement,
    /// Create the freezer part of the cgroup (OCI `pause`).
    pub pausable: bool,
    pub entry: Entry,
    pub start: Start,
    /// Where a terminal's master end goes (`--console-socket`). Without one, an attached
    /// launcher ([`Start::Pipe`]) keeps it: [`Spawned::take_terminal`].
    pub console_socket: Option<PathBuf>,
    /// The workload keeps the launcher's stdin (else it reads `/dev/null`).
    pub keep_stdin: bool,
    pub preserve_fds: u32,
    pub hooks: ContainerHooks,
}

/// A container whose first process exists, in its namespaces and cgroup, and waits for "go".
pub struct Spawned {
    pid: Pid,
    child: ChildProcess,
    cgroup: Option<Cgroup>,
    go: OwnedFd,
    status: StatusReader,
    ready: Option<std::thread::JoinHandle<Option<u64>>>,
    progress: Progress,
    forwarder: Option<SignalForwarder>,
    attached: bool,
    /// The ready pipe's descriptor number in the first process (`sandbox-guest init`'s).
    ready_fd: Option<i32>,
    /// The launcher's end of the socket the terminal's master arrives on (attached, `-t`).
    console: Option<OwnedFd>,
}

/// How the workload ended.
#[derive(Debug, Clone)]
pub struct Exited {
    /// The shell-style status: the exit code, or 128 + the signal.
    pub status: i32,
    pub oom_killed: bool,
    pub stats: cgroups::CgroupStats,
    /// When the workload said `ready` (monotonic ns), with `sandbox-guest` as init.
    pub ready_ns: Option<u64>,
    pub exited_ns: u64,
}

/// An OCI container the launcher hands over: its first process's pid and cgroup directories.
#[derive(Debug, Clone)]
pub struct Detached {
    pub pid: Pid,
    pub cgroup_dirs: Vec<PathBuf>,
    pub cgroup_created: Vec<PathBuf>,
}

/// A launch whose every check passed, with the first process's configuration converted
/// (filters compiled, names resolved): nothing exists on the host yet.
pub struct Prepared {
    plan: Plan,
    launch: Launch,
    config: ChildConfig,
    flags: nix::sched::CloneFlags,
    rootless: bool,
}

/// Checks `plan` and `launch` and converts everything the first process will need. Refuses
/// what can be refused before anything is created.
pub fn prepare(plan: &Plan, launch: &Launch) -> Result<Prepared, ContainerError> {
    let began = trace::start();
    let rootless = namespaces::rootless();
    let prepared = check(plan, launch, rootless)?;
    let flags = prepared.clone;
    let config = child_config(plan, launch, prepared, rootless)?;
    trace::step("checks", began, || {
        let (programs, instructions) = config.filters.as_ref().map_or((0, 0), |f| f.size());
        format!(
            "command {:?}, rootless {rootless}; seccomp compiled to {programs} BPF programs, \
             {instructions} instructions",
            plan.argv()
        )
    });
    Ok(Prepared {
        plan: plan.clone(),
        launch: launch.clone(),
        config,
        flags,
        rootless,
    })
}

impl Prepared {
    /// Creates the cgroup and the first process (which waits for [`Spawned::go`]). Call it from
    /// a single-threaded launcher (see [`process::spawn`]).
    pub fn spawn(self) -> Result<Spawned, ContainerError> {
        spawn_prepared(self)
    }
}

fn spawn_prepared(p: Prepared) -> Result<Spawned, ContainerError> {
    let Prepared {
        plan,
        launch,
        mut config,
        flags,
        rootless,
    } = p;
    let plan = &plan;
    let launch = &launch;
    config.start = match &launch.start {
        Start::Pipe => StartWait::Pipe,
        Start::Fifo(path) => StartWait::Fifo(
            nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| ContainerError::sys(format!("opening the exec FIFO {}", path.display()), e))?,
        ),
    };
    let mut console = None;
    if plan.process.terminal {
        match &launch.console_socket {
            Some(path) => {
                config.console_socket = Some(terminal::connect(path).map_err(ContainerError::Config)?)
            }
            None => {
                // Attached (`sandbox run -t`): the master comes back to this launcher.
                let (ours, theirs) = nix::sys::socket::socketpair(
                    nix::sys::socket::AddressFamily::Unix,
                    nix::sys::socket::SockType::Stream,
                    None,
                    nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                )
                .map_err(|e| ContainerError::sys("creating the terminal's socket pair", e))?;
                config.console_socket = Some(theirs);
                console = Some(ours);
            }
        }
    }
    let cgroup = create_cgroup(plan, launch, rootless)?;
    let (go_read, go_write) = process::pipe()?;
    let (status_read, status_write) = process::pipe()?;
    let ready = match launch.entry {
        Entry::GuestInit { .. } => Some(process::pipe()?),
        _ => None,
    };
    config.go_fd = go_read.as_raw_fd();
    config.launcher_ends = [go_write.as_raw_fd(), status_read.as_raw_fd()]
        .into_iter()
        .chain(ready.as_ref().map(|(r, _)| r.as_raw_fd()))
        .chain(console.as_ref().map(|c| c.as_raw_fd()))
        .collect();
    config.status_fd = status_write.as_raw_fd();
    config.ready_fd = ready.as_ref().map(|(_, w)| w.as_raw_fd());

    if let Some(join) = config.joins.iter().find(|j| j.kind == NamespaceKind::Pid) {
        // A process cannot change its own PID namespace; its children start in this one.
        nix::sched::setns(&join.fd, nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| ContainerError::sys(format!("joining the pid namespace {}", join.path), e))?;
    }
    // On a pure cgroup v2 host the child is born in its cgroup (clone3 CLONE_INTO_CGROUP).
    let cgroup_dir = cgroup.as_ref().and_then(|cg| cg.sole_v2_dir()).and_then(|dir| {
        nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
    });
    let began = trace::start();
    let (pid, placed) = process::spawn_placed(
        &mut config,
        flags,
        cgroup_dir.as_ref().map(std::os::fd::AsFd::as_fd),
    )?;
    drop(cgroup_dir);
    let child = ChildProcess::new(pid);
    trace::step("clone", began, || {
        let how = if placed {
            "clone3, born in its cgroup (CLONE_INTO_CGROUP)"
        } else {
            "clone"
        };
        format!("pid {pid} (host view), flags {flags:?}, {how}")
    });
    if trace::enabled() {
        trace_namespaces(pid, &plan.isolation.namespaces);
    }
    // The child's ends belong to the child now.
    drop(go_read);
    drop(status_write);
    let ready_fd = ready.as_ref().map(|(_, w)| w.as_raw_fd());
    let ready = ready.map(|(read, write)| {
        drop(write);
        process::watch_ready(read)
    });
    drop(config);
    let forwarder = match launch.start {
        Start::Pipe => Some(SignalForwarder::install(pid)?),
        Start::Fifo(_) => None,
    };
    let spawned = Spawned {
        pid,
        child,
        cgroup,
        go: go_write,
        status: StatusReader::new(status_read),
        ready,
        progress: Progress::default(),
        forwarder,
        attached: launch.start == Start::Pipe,
        ready_fd,
        console,
    };
    spawned.map_ids(plan, flags)?;
    if let Some(cg) = spawned.cgroup.as_ref().filter(|_| !placed) {
        cg.add_pid(pid)
            .map_err(|e| ContainerError::Cgroup(e.to_string()))?;
    }
    let state = hook_state(&launch.hooks.state, "creating", pid);
    hooks::run("createRuntime", &launch.hooks.create_runtime, &state).map_err(ContainerError::Hook)?;
    Ok(spawned)
}

/// Everything that can be refused before anything is created.
fn check(plan: &Plan, launch: &Launch, rootless: bool) -> Result<namespaces::Prepared, ContainerError> {
    if rootless {
        namespaces::check_user_namespaces()?;
        if plan.resources.any() {
            return Err(ContainerError::RootlessUnsupported {
                what: "--memory/--cpus/--pids".into(),
                uid: nix::unistd::geteuid().as_raw(),
                why: "a delegated cgroup to put limits on".into(),
            });
        }
    }
    if plan.process.terminal && launch.console_socket.is_none() && launch.start != Start::Pipe {
        return Err(ContainerError::Config(
            "process.terminal is true but no --console-socket was given: pass one, or set terminal to false"
                .into(),
        ));
    }
    if let Some(p) = &plan.isolation.rootfs_propagation {
        if mounts::propagation_of(p).is_none() {
            return Err(ContainerError::Config(format!(
                "linux.rootfsPropagation {p:?} is not one of shared, slave, private, unbindable (with or without an r prefix)"
            )));
        }
    }
    for key in plan.isolation.sysctl.keys() {
        if key.is_empty() || key.contains("..") || key.contains('/') {
            return Err(ContainerError::Config(format!(
                "sysctl {key:?} is not a kernel parameter name"
            )));
        }
    }
    namespaces::prepare(&plan.isolation.namespaces)
}

/// Builds the first process's configuration (everything converted before `clone`).
fn child_config(
    plan: &Plan,
    launch: &Launch,
    prepared: namespaces::Prepared,
    rootless: bool,
) -> Result<ChildConfig, ContainerError> {
    let filters = plan
        .isolation
        .seccomp
        .as_ref()
        .map(seccomp::compile)
        .transpose()?;
    let requested = caps::Sets::from_plan(plan.process.capabilities.as_ref()).map_err(|name| {
        ContainerError::Config(format!(
            "unknown capability {name:?} in process.capabilities: use names like CAP_CHOWN"
        ))
    })?;
    let rlimits = rlimits::resolve(&plan.process.rlimits).map_err(ContainerError::Config)?;
    let cstring = |what: &str, s: &str| {
        CString::new(s).map_err(|_| ContainerError::Config(format!("{what} {s:?} contains a NUL byte")))
    };
    let exec = match &launch.entry {
        Entry::GuestInit {
            plan: plan_file,
            path_var,
        } => ExecTarget::GuestInit {
            path: cstring("the guest program path", sandbox_protocol::GUEST_PATH_IN_IMAGE)?,
            argv: vec![cstring("argv", "sandbox-guest")?, cstring("argv", "init")?],
            env: vec![cstring("PATH", &format!("PATH={path_var}"))?],
            plan: plan_file.clone(),
        },
        Entry::Direct => {
            let env: Vec<String> = plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let path_var = plan
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map_or(sandbox_protocol::DEFAULT_PATH.to_string(), |(_, v)| v.clone());
            let (uid, gid) = plan.user.unwrap_or((0, 0));
            ExecTarget::Direct {
                argv: plan
                    .command
                    .iter()
                    .map(|a| cstring("argument", a))
                    .collect::<Result<_, _>>()?,
                env: env
                    .iter()
                    .map(|e| cstring("environment variable", e))
                    .collect::<Result<_, _>>()?,
                path_var,
                cwd: cstring("process.cwd", plan.workdir.as_deref().unwrap_or("/"))?,
                identity: Identity {
                    uid,
                    gid,
                    additional_gids: plan.process.additional_gids.clone(),
                    umask: plan.process.umask,
                },
            }
        }
        Entry::Nothing => ExecTarget::Nothing,
    };
    let kinds: Vec<NamespaceKind> = plan.isolation.namespaces.iter().map(|n| n.kind).collect();
    let has = |k: NamespaceKind| kinds.contains(&k);
    let dev_is_bound = plan
        .isolation
        .mounts
        .iter()
        .any(|m| m.destination.trim_end_matches('/') == "/dev" && m.is_bind());
    Ok(ChildConfig {
        rootless,
        user_namespace: has(NamespaceKind::User),
        mount_namespace: prepared.has_mount_namespace(&plan.isolation.namespaces),
        new_cgroup_namespace: prepared.new_cgroup,
        joins: prepared.joins,
        hostname: plan.hostname.clone().filter(|_| has(NamespaceKind::Uts)),
        root: launch.root.clone(),
        rootfs: launch.rootfs.clone(),
        readonly_root: plan.isolation.readonly_root,
        root_propagation: plan
            .isolation
            .rootfs_propagation
            .as_deref()
            .and_then(mounts::propagation_of),
        mounts: plan.isolation.mounts.clone(),
        create_devices: !dev_is_bound,
        devices: plan.isolation.devices.clone(),
        masked_paths: plan.isolation.masked_paths.clone(),
        readonly_paths: plan.isolation.readonly_paths.clone(),
        sysctl: plan
            .isolation
            .sysctl
            .iter()
            .map(|(k, v)| (format!("/proc/sys/{}", k.replace('.', "/")), v.clone()))
            .collect(),
        terminal: plan.process.terminal,
        console_size: plan.process.console_size,
        console_socket: None,
        oom_score_adj: plan.process.oom_score_adj,
        rlimits,
        create_container_hooks: launch.hooks.create_container.clone(),
        start_container_hooks: launch.hooks.start_container.clone(),
        hook_state: launch.hooks.state.clone(),
        start: StartWait::Pipe,
        attached: launch.start == Start::Pipe,
        stdin_null: !launch.keep_stdin && !plan.process.terminal,
        filters,
        caps: requested.limited_to(caps::bounding_of_self()),
        last_cap: caps::last_cap(),
        no_new_privileges: plan.process.no_new_privileges,
        exec,
        preserve_fds: launch.preserve_fds,
        host_cgroup_ns: if trace::enabled() {
            namespaces::inode("self", "cgroup")
        } else {
            None
        },
        go_fd: -1,
        launcher_ends: Vec::new(),
        status_fd: -1,
        ready_fd: None,
        held: Default::default(),
    })
}

/// The sandbox's cgroup (none for a rootless launcher: nobody delegated one to it).
fn create_cgroup(plan: &Plan, launch: &Launch, rootless: bool) -> Result<Option<Cgroup>, ContainerError> {
    if rootless {
        trace::note("cgroup", || {
            "none (rootless: the user namespace gets no delegated cgroup)".into()
        });
        return Ok(None);
    }
    Cgroup::create(&launch.placement, &plan.resources, launch.pausable)
        .map(Some)
        .map_err(|e| ContainerError::Cgroup(e.to_string()))
}

/// Prints one trace line per namespace `clone` created for `pid`, with its inode and the
/// launcher's own for comparison (different inodes: a different namespace).
fn trace_namespaces(pid: Pid, plan: &[sandbox_protocol::isolation::Namespace]) {
    let pid = pid.to_string();
    let mut names: Vec<&str> = plan
        .iter()
        .filter(|n| n.path.is_none() && n.kind != NamespaceKind::Cgroup)
        .map(|n| n.kind.proc_name())
        .collect();
    names.sort_by_key(|n| *n != "user");
    for name in names {
        let show = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        trace::note("namespace", || {
            format!(
                "{name} inode {} (host {}) by clone",
                show(namespaces::inode(&pid, name)),
                show(namespaces::inode("self", name))
            )
        });
    }
}

/// The hooks' state JSON with `status` and `pid` filled in.
fn hook_state(template: &str, status: &str, pid: Pid) -> String {
    template
        .replace("\"@STATUS@\"", &format!("\"{status}\""))
        .replace("\"pid\":0", &format!("\"pid\":{pid}"))
}

impl Spawned {
    /// The first process's pid (in the launcher's PID namespace).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The container's cgroup, if it has one.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// The ready pipe's descriptor number in the first process, for the guest program's Plan.
    pub fn ready_fd(&self) -> Option<i32> {
        self.ready_fd
    }

    /// What the first process reported so far.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Writes the id maps of a new user namespace.
    fn map_ids(&self, plan: &Plan, flags: nix::sched::CloneFlags) -> Result<(), ContainerError> {
        let began = trace::start();
        if flags.contains(nix::sched::CloneFlags::CLONE_NEWUSER) {
            let (uid, gid) = namespaces::mappings(&plan.isolation.uid_mappings, &plan.isolation.gid_mappings);
            namespaces::write_id_maps(self.pid, &uid, &gid)?;
        }
        let pid = self.pid;
        let own = flags.contains(nix::sched::CloneFlags::CLONE_NEWUSER);
        trace::step("idmap", began, || {
            let map = |f: &str| {
                std::fs::read_to_string(format!("/proc/{pid}/{f}"))
                    .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                    .unwrap_or_else(|e| format!("unreadable ({e})"))
            };
            format!(
                "uid_map [{}] gid_map [{}]{}",
                map("uid_map"),
                map("gid_map"),
                if own {
                    " (written: the container has a user namespace of its own)"
                } else {
                    " (no user namespace: uids are the host's)"
                }
            )
        });
        Ok(())
    }

    /// Lets the first process set itself up (with `net` for its interface), up to "created".
    pub fn go(&mut self, net: Option<NetPlan>) -> Result<(), ContainerError> {
        let began = trace::start();
        let go = Go {
            net,
            pid: self.pid.as_raw(),
        };
        process::send_line(&self.go, &child::go_message(&go))?;
        trace::step("go", began, || {
            format!("sent to pid {}: the container process sets itself up", self.pid)
        });
        self.status.until_created(&mut self.progress);
        if let Some(error) = self.progress.error.take() {
            self.child.kill();
            return Err(ContainerError::Child(error));
        }
        Ok(())
    }

    /// Releases the workload (`sandbox run`), and waits until it is executing.
    /// The master end of the workload's terminal, for a launcher that keeps it (`sandbox run
    /// -t`); call after [`Spawned::go`] (the first process sends it while it builds the root).
    pub fn take_terminal(&mut self) -> Result<Option<OwnedFd>, ContainerError> {
        let Some(socket) = self.console.take() else {
            return Ok(None);
        };
        terminal::receive_master(&socket)
            .map(Some)
            .map_err(|e| ContainerError::sys("receiving the terminal from the container", e))
    }

    pub fn start(&mut self) -> Result<(), ContainerError> {
        process::send_line(&self.go, "start\n")?;
        self.status.until_exec(&mut self.progress);
        if let Some(error) = self.progress.error.take() {
            self.child.kill();
            return Err(ContainerError::Child(error));
        }
        Ok(())
    }

    /// Waits for the first process to end and reads the cgroup's figures.
    pub fn wait(&mut self) -> Result<Exited, ContainerError> {
        let status = self.child.wait()?;
        let exited_ns = trace::now_ns();
        let ready_ns = self.ready.take().and_then(|h| h.join().ok().flatten());
        let oom_killed = self.cgroup.as_ref().is_some_and(Cgroup::oom_killed);
        let stats = self.cgroup.as_ref().map(Cgroup::stats).unwrap_or_default();
        self.forwarder = None;
        Ok(Exited {
            status,
            oom_killed,
            stats,
            ready_ns,
            exited_ns,
        })
    }

    /// Kills whatever is left and removes the cgroup, reporting failures (`sandbox run`'s
    /// teardown; dropping does the same silently).
    pub fn remove(mut self) -> Result<(), ContainerError> {
        self.child.kill();
        self.forwarder = None;
        if let Some(cg) = self.cgroup.take() {
            let began = trace::start();
            let paths = cg.paths();
            cg.remove().map_err(|e| ContainerError::Cgroup(e.to_string()))?;
            trace::step("cgroup.remove", began, || {
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            });
        }
        Ok(())
    }

    /// Hands the created container over (OCI `create`): the first process and the cgroup
    /// outlive this launcher.
    pub fn detach(mut self) -> Detached {
        let (cgroup_dirs, cgroup_created) = self.cgroup.take().map(Cgroup::into_paths).unwrap_or_default();
        debug_assert!(!self.attached);
        Detached {
            pid: self.child.release(),
            cgroup_dirs,
            cgroup_created,
        }
    }
}

/// Releases a created container's workload from another process (OCI `start`): one byte to
/// the FIFO its first process waits on. Fails when nobody waits on it any more.
pub fn start_fifo(fifo: &std::path::Path) -> Result<(), ContainerError> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open(
        fifo,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ENXIO => ContainerError::Child(
            "the container's first process is not waiting to start (it has died): delete the container"
                .into(),
        ),
        e => ContainerError::sys(format!("opening the exec FIFO {}", fifo.display()), e),
    })?;
    nix::unistd::write(&fd, b"0").map_err(|e| ContainerError::sys("releasing the container's process", e))?;
    Ok(())
}
