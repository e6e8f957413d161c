//! VM mode behind the OCI runtime (`sandbox-runtime-vm`, or the `org.sandbox.mode=vm`
//! annotation): the bundle's process in its own microVM, Kata-style.
//!
//! `create` refuses what a VM cannot honour (host bind mounts other than small files, which it
//! copies in), settles the guest's size from
//! the bundle's limits, and makes the disks: the VM's root is the guest program's image (the
//! default image's cached root disk, copied), and the bundle's rootfs is a second disk, cached
//! by its metadata ([`super::bundle_disk`]) and copied unless `root.readonly` — the guest's init
//! mounts it and makes it the workload's root. It then forks the **holder**: a process of its
//! own (the state's pid, which the shim or conmon reaps) that runs the VMM, holds the stdio
//! `create` was given, and waits on the exec FIFO. The VM boots at once and its init waits for
//! the guest agent's `run`; `start` writes the FIFO, and the holder asks the agent to run the
//! workload and relays its stdin, stdout and stderr (or a pty, sent through the console
//! socket) until its exit status, which becomes the holder's. `kill` reaches the workload
//! through the agent; `pause`/`resume` stop and continue the holder (vCPUs included); `delete`
//! removes the directory with its disk copies and vsock socket.

use super::agent::{Agent, LocalIo, VSOCK_SOCKET_NAME};
use super::{disks, VmOptions, GUEST_CID};
use crate::backend::{Backend, CreateRequest, Created, Holding, Stats};
use crate::error::CoreError;
use crate::plan::RootKind;
use crate::state::{Mode, SandboxDir, State, EXEC_FIFO};
use sandbox_image::ResolvedImage;
use sandbox_protocol::isolation::{GuestConfinement, ResourcePlan};
use sandbox_protocol::{
    exit_device, CopiedFile, Plan, ReadyChannel, StartMode, WorkloadRoot, COPIED_FILES_TOTAL_MAX,
    COPIED_FILE_MAX,
};
use sandbox_vmm::stop_signals::StopSignals;
use sandbox_vmm::{DiskConfig, SerialSink, VmConfig, VsockConfig};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Guest memory added to `resources.memory.limit`: what the guest kernel and init use before
/// the workload gets any (the 6.1 guest kernel with its page tables and init: about 24 MiB
/// measured with `free` in a 128 MiB guest; rounded up).
pub const KERNEL_OVERHEAD_MIB: u64 = 32;
/// The holder's timeline (see `holder::Timeline`).
pub const HOLDER_LOG: &str = "holder.log";
/// The file the holder writes the guest console to (kernel messages, init's warnings).
pub const CONSOLE_LOG: &str = "console.log";
/// How long the holder waits for the guest agent after `start` (the VM may still be booting).
const AGENT_WAIT: Duration = Duration::from_secs(120);
/// How long `kill` waits for the agent before signalling the holder itself.
const KILL_AGENT_WAIT: Duration = Duration::from_secs(5);
/// How long the holder lets the guest power off by itself after the workload ended.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);
/// What the VM thread writes into the exec FIFO when the VM ended before `start`.
const VM_ENDED: u8 = b'x';

/// The guest's size for a bundle's limits: memory limit plus [`KERNEL_OVERHEAD_MIB`] (whole
/// MiB), the CPU quota rounded up to whole vCPUs, no pids limit (the guest kernel is the
/// boundary; podman sets one by default).
pub fn guest_resources(resources: &ResourcePlan) -> ResourcePlan {
    let mut r = resources.clone();
    r.pids = None;
    r.memory.limit = resources
        .memory
        .limit
        .filter(|l| *l > 0)
        .map(|l| (((l as u64).div_ceil(1 << 20) + KERNEL_OVERHEAD_MIB) << 20) as i64);
    if let Some(cpus) = resources.cpu.as_cpus() {
        r.cpu.quota = Some((cpus.ceil().max(1.0) as i64) * 100_000);
        r.cpu.period = Some(100_000);
    }
    r
}

/// Filesystems the guest provides itself: a bundle mount of one of these types is satisfied by
/// the guest's own.
const GUEST_PROVIDED: [&str; 7] = ["proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"];

/// The bundle's mounts as a VM can give them: the guest's own filesystems for the kinds it
/// provides, and a bind mount of a host **file** (at most [`COPIED_FILE_MAX`], all together at
/// most [`COPIED_FILES_TOTAL_MAX`]) copied now and mounted by init. Any other bind mount (a
/// directory, a device) or filesystem is refused with one line naming the mount and the fix.
pub fn copied_files(plan: &Plan) -> Result<Vec<CopiedFile>, CoreError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    for m in &plan.isolation.mounts {
        let bind =
            m.kind.is_empty() || m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
        let refuse = |detail: String| CoreError::Unsupported {
            what: format!(
                "mount {} ({} {}){detail}",
                m.destination,
                if m.kind.is_empty() { "bind" } else { &m.kind },
                m.source
            ),
            mode: Mode::Vm,
            remedy: format!(
                "a microVM cannot share host paths with its guest; a regular file up to {} KiB is \
                 copied in, nothing else: remove the mount, or run the bundle in container mode \
                 (org.sandbox.mode=container)",
                COPIED_FILE_MAX >> 10
            ),
        };
        if !bind {
            if GUEST_PROVIDED.contains(&m.kind.as_str()) {
                continue;
            }
            return Err(refuse(String::new()));
        }
        let meta =
            std::fs::metadata(&m.source).map_err(|e| refuse(format!(": cannot read the source: {e}")))?;
        if !meta.is_file() {
            return Err(refuse(": not a regular file".into()));
        }
        if meta.len() > COPIED_FILE_MAX {
            return Err(refuse(format!(": {} bytes", meta.len())));
        }
        total += meta.len();
        if total > COPIED_FILES_TOTAL_MAX {
            return Err(refuse(format!(
                ": the copied files pass {} KiB together",
                COPIED_FILES_TOTAL_MAX >> 10
            )));
        }
        let contents =
            std::fs::read(&m.source).map_err(|e| refuse(format!(": cannot read the source: {e}")))?;
        files.push(CopiedFile {
            destination: m.destination.clone(),
            contents,
            mode: std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            read_only: m.options.iter().any(|o| o == "ro"),
        });
    }
    Ok(files)
}

/// The bundle's namespaces, capabilities and seccomp profile, settled for the guest's init:
/// names resolved, the profile compiled to BPF here (the same compiler as container mode's).
pub fn confinement(plan: &Plan) -> Result<GuestConfinement, CoreError> {
    use sandbox_protocol::isolation::NamespaceKind as K;
    let namespaces = plan
        .isolation
        .namespaces
        .iter()
        .map(|n| n.kind)
        .filter(|k| matches!(k, K::Mount | K::Uts | K::Ipc | K::Network | K::Cgroup))
        .collect();
    let sets = sandbox_container::caps::Sets::from_plan(plan.process.capabilities.as_ref()).map_err(|name| {
        CoreError::Bundle(format!(
            "process.capabilities: {name:?} is not a capability this host knows: fix the name (e.g. CAP_CHOWN)"
        ))
    })?;
    let seccomp = match &plan.isolation.seccomp {
        Some(profile) => sandbox_container::seccomp::compile(profile)?.to_words(),
        None => Vec::new(),
    };
    Ok(GuestConfinement {
        namespaces,
        capabilities: Some([
            sets.bounding,
            sets.effective,
            sets.permitted,
            sets.inheritable,
            sets.ambient,
        ]),
        no_new_privileges: plan.process.no_new_privileges,
        seccomp,
    })
}

/// VM mode for an OCI bundle (one instance per runtime command).
pub struct OciVm {
    /// The runtime's root (`--root`): a sandbox's directory is `root/<id>`.
    root: PathBuf,
    /// Settled by `check`.
    checked: Option<Settled>,
}

struct Settled {
    checked: super::Checked,
    /// The cached root disk of the guest program's image.
    base: PathBuf,
    /// The cached disk of the bundle's rootfs.
    bundle_disk: PathBuf,
    read_only: bool,
    /// The host files the bundle bind-mounts, read at `check`.
    files: Vec<CopiedFile>,
}

impl OciVm {
    pub fn new(root: &Path) -> OciVm {
        OciVm {
            root: root.to_path_buf(),
            checked: None,
        }
    }

    fn dir_of(&self, state: &State) -> PathBuf {
        self.root.join(&state.id)
    }
}

/// The image whose root disk boots every OCI VM: it carries the guest program.
fn guest_image() -> Result<ResolvedImage, CoreError> {
    let store = sandbox_image::Store::open_default().map_err(|source| CoreError::Image {
        image: "default".into(),
        source,
    })?;
    store.resolve("default").map_err(|source| CoreError::Image {
        image: "default".into(),
        source,
    })
}

fn sys<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(nix::errno::Errno) -> CoreError + 'a {
    move |errno| CoreError::Io {
        what,
        path: path.to_path_buf(),
        source: errno.into(),
    }
}

impl Backend for OciVm {
    fn mode(&self) -> Mode {
        Mode::Vm
    }

    fn check(&mut self, request: &CreateRequest) -> Result<(), CoreError> {
        if !matches!(request.holding, Holding::Detached { .. }) {
            return Err(CoreError::Internal(
                "the OCI VM backend only holds detached VMs".into(),
            ));
        }
        let assembled = request.assembled;
        let RootKind::Directory(rootfs) = &assembled.root else {
            return Err(CoreError::Internal(
                "an OCI VM needs a bundle root directory".into(),
            ));
        };
        if assembled.plan.command.is_empty() {
            return Err(CoreError::Bundle(
                "VM mode needs a process to run: give the bundle a process.args".into(),
            ));
        }
        let files = copied_files(&assembled.plan)?;
        let checked = super::check(
            &guest_resources(&assembled.plan.resources),
            &[],
            &VmOptions::new(),
        )?;
        let image = guest_image()?;
        let base = disks::root_disk(&image)?;
        let (bundle_disk, _built) = super::bundle_disk::cached(rootfs)?;
        self.checked = Some(Settled {
            checked,
            base,
            bundle_disk,
            read_only: assembled.plan.isolation.readonly_root,
            files,
        });
        Ok(())
    }

    fn create(&mut self, request: &CreateRequest, dir: &SandboxDir) -> Result<Created, CoreError> {
        let settled = self
            .checked
            .take()
            .ok_or_else(|| CoreError::Internal("create before check".into()))?;
        let Holding::Detached { console_socket, .. } = &request.holding else {
            return Err(CoreError::Internal("an attached OCI VM".into()));
        };
        let plan = &request.assembled.plan;
        let root = disks::writable_copy(&settled.base, &dir.path().join("root.ext4"), "default")?;
        let workload_disk = if settled.read_only {
            DiskConfig {
                path: settled.bundle_disk.clone(),
                read_only: true,
            }
        } else {
            let copy = disks::writable_copy(
                &settled.bundle_disk,
                &dir.path().join("rootfs.ext4"),
                "the bundle",
            )?;
            let path = copy.path().to_path_buf();
            // The directory owns the copy from here (delete removes it).
            std::mem::forget(copy);
            DiskConfig {
                path,
                read_only: false,
            }
        };
        let console =
            std::fs::File::create(dir.path().join(CONSOLE_LOG)).map_err(|source| CoreError::Io {
                what: "cannot create the console log",
                path: dir.path().join(CONSOLE_LOG),
                source,
            })?;
        let mut config = VmConfig::new(
            settled.checked.kernel.clone(),
            DiskConfig {
                path: root.path().to_path_buf(),
                read_only: false,
            },
        );
        std::mem::forget(root);
        config.memory_mib = settled.checked.memory_mib;
        config.vcpus = settled.checked.vcpus;
        config.allow_pvm = settled.checked.allow_pvm;
        config.serial = SerialSink::Writer(Box::new(console));
        config.disks = vec![workload_disk.clone()];
        let mut guest: Plan = plan.clone();
        config.plan = Some(guest.clone());
        guest.workload_root = Some(WorkloadRoot {
            device: config.extra_disk_device(0),
            read_only: workload_disk.read_only,
            files: settled.files,
        });
        guest.confinement = Some(confinement(plan)?);
        guest.start = StartMode::OnRequest;
        guest.ready = ReadyChannel::Port(exit_device::PORT);
        guest.stdin = true;
        config.plan = Some(guest);
        config.vsock = Some(VsockConfig {
            uds_path: dir.path().join(VSOCK_SOCKET_NAME),
            guest_cid: GUEST_CID,
        });
        let fifo = dir.path().join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(sys("cannot make the exec FIFO", &fifo))?;
        let terminal = terminal_for(
            plan.process.terminal,
            console_socket.as_deref(),
            plan.process.console_size,
        )?;
        let pid = holder::spawn(config, fifo, terminal)?;
        Ok(Created {
            pid,
            rootfs: settled.bundle_disk.display().to_string(),
            ..Created::default()
        })
    }

    fn start(&mut self, dir: &SandboxDir, _state: &State) -> Result<(), CoreError> {
        let fifo = dir.path().join(EXEC_FIFO);
        sandbox_container::start_fifo(&fifo)?;
        Ok(())
    }

    fn wait(&mut self, _state: &State) -> Result<sandbox_spec::Outcome, CoreError> {
        Err(CoreError::Internal(
            "an OCI VM is waited for by whoever ran create".into(),
        ))
    }

    fn kill(&self, state: &State, signal: i32, all: bool) -> Result<(), CoreError> {
        let socket = self.dir_of(state).join(VSOCK_SOCKET_NAME);
        // KILL to every process (`delete --force`, `kill --all KILL`): the whole VM, at once.
        if all && signal == libc::SIGKILL {
            return match nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(state.pid),
                nix::sys::signal::Signal::SIGKILL,
            ) {
                // Already gone: nothing is left to kill.
                Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                Err(e) => Err(sys("cannot kill the VM's holder", Path::new("/proc"))(e)),
            };
        }
        // Started: the workload gets it in the guest. Before that (or with the agent gone),
        // the holder does: SIGTERM and SIGINT stop the VM, SIGKILL ends it at once.
        if state.started && socket.exists() {
            if let Ok(agent) = Agent::connect(&socket, KILL_AGENT_WAIT) {
                if agent.signal(signal, all).is_ok() {
                    return Ok(());
                }
            }
        }
        let signal = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| CoreError::Bundle(format!("signal {signal} is not a signal of this system")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid), signal)
            .map_err(sys("cannot signal the VM's holder", Path::new("/proc")))
    }

    fn delete(&mut self, dir: SandboxDir, _state: &State) -> Result<(), CoreError> {
        dir.remove()
    }

    fn pause(&self, state: &State) -> Result<(), CoreError> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(state.pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .map_err(sys("cannot stop the VM's holder", Path::new("/proc")))
    }

    fn resume(&self, state: &State) -> Result<(), CoreError> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(state.pid),
            nix::sys::signal::Signal::SIGCONT,
        )
        .map_err(sys("cannot continue the VM's holder", Path::new("/proc")))
    }

    fn stats(&self, state: &State) -> Result<Stats, CoreError> {
        let agent = Agent::connect(self.dir_of(state).join(VSOCK_SOCKET_NAME), KILL_AGENT_WAIT)?;
        let guest = agent.stats()?;
        Ok(Stats {
            memory_usage_bytes: Some(guest.memory_used_bytes),
            memory_limit_bytes: Some(guest.memory_total_bytes),
            cpu_usage_ns: cpu_time_ns(state.pid),
            pids_current: Some(guest.pids),
            ..Stats::default()
        })
    }

    fn pids(&self, state: &State) -> Result<Vec<i32>, CoreError> {
        Ok(vec![state.pid])
    }
}

/// `sandbox-runtime exec` in a VM: forks a relay process (this command's child, whose pid the
/// caller reports) that runs the process through the guest agent with this process's stdio
/// (or a pty sent through `console_socket`) and exits with its status.
pub fn spawn_exec(
    dir: &Path,
    request: super::exec::Request,
    console_socket: Option<&Path>,
) -> Result<i32, CoreError> {
    let terminal = terminal_for(request.terminal, console_socket, None)?;
    let dir = dir.to_path_buf();
    holder::fork(move || {
        holder::take_terminal(terminal);
        match super::exec::run(&dir, &request) {
            Ok(status) => status,
            Err(e) => {
                eprintln!("sandbox-runtime: exec: {e}");
                e.exit_status()
            }
        }
    })
}

/// The holder's CPU time (its vCPU threads' and the VMM's), from /proc.
fn cpu_time_ns(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// With `terminal`, a pty whose master went through `console_socket` (its slave returned);
/// refused without a socket.
fn terminal_for(
    terminal: bool,
    console_socket: Option<&Path>,
    size: Option<(u16, u16)>,
) -> Result<Option<OwnedFd>, CoreError> {
    match (terminal, console_socket) {
        (true, Some(socket)) => Ok(Some(send_terminal(socket, size)?)),
        (true, None) => Err(CoreError::Bundle(
            "process.terminal is true but no --console-socket was given: pass one, or set terminal to false"
                .into(),
        )),
        (false, _) => Ok(None),
    }
}

/// Opens a pty for a terminal workload and sends its master through `socket`; returns the slave
/// for the holder.
fn send_terminal(socket: &Path, size: Option<(u16, u16)>) -> Result<OwnedFd, CoreError> {
    let pty = sandbox_container::terminal::open(Path::new("/"), size)
        .map_err(|e| CoreError::Bundle(format!("cannot open a pseudo-terminal: {e}")))?;
    let stream = std::os::unix::net::UnixStream::connect(socket).map_err(|source| CoreError::Io {
        what: "cannot connect to the console socket",
        path: socket.to_path_buf(),
        source,
    })?;
    sandbox_container::terminal::send_master(stream.as_raw_fd(), &pty.master)
        .map_err(|e| CoreError::Bundle(format!("console socket {}: {e}", socket.display())))?;
    Ok(pty.slave)
}

mod holder {
    //! The holder process: forked by `create`, it runs the VMM on a thread, waits for `start`,
    //! runs the workload through the agent and exits with its status.

    use super::*;
    use std::io::Read;

    /// Forks the holder; returns its pid. `create` must be single-threaded here (it forks).
    pub fn spawn(config: VmConfig, fifo: PathBuf, terminal: Option<OwnedFd>) -> Result<i32, CoreError> {
        // The FIFO's read end is open before `create` returns, so `start` finds a reader for as
        // long as the holder lives (and ENXIO, "it has died", once it does not).
        let start: OwnedFd = nix::fcntl::open(
            &fifo,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys("cannot open the exec FIFO", &fifo))?;
        fork(move || main(config, &fifo, start, terminal))
    }

    /// Forks a child that runs `body` and exits with its status; returns the child's pid. The
    /// caller must be single-threaded.
    pub fn fork(body: impl FnOnce() -> i32) -> Result<i32, CoreError> {
        let threads = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse::<u32>().ok())
            })
            .unwrap_or(1);
        if threads > 1 {
            return Err(CoreError::Internal(format!(
                "the VM holder must be forked from a single-threaded process ({threads} threads)"
            )));
        }
        // SAFETY: this process is single-threaded (checked above), so the child may run any
        // code; it never returns from `main`.
        match unsafe { nix::unistd::fork() }
            .map_err(sys("cannot fork the VM's holder", Path::new("/proc")))?
        {
            nix::unistd::ForkResult::Parent { child } => Ok(child.as_raw()),
            nix::unistd::ForkResult::Child => {
                let status = body();
                // SAFETY: ends the holder without running the runtime's exit handlers twice.
                unsafe { libc::_exit(status) }
            }
        }
    }

    /// A session of its own; with a pty, the pty as controlling terminal (a resize by the
    /// console's owner then arrives as SIGWINCH) and as descriptors 0-2.
    pub fn take_terminal(terminal: Option<OwnedFd>) {
        let _ = nix::unistd::setsid();
        if let Some(slave) = &terminal {
            // SAFETY: TIOCSCTTY takes an int by value.
            unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
            for fd in 0..3 {
                // SAFETY: dup2 makes descriptor 0-2 a copy of the pty slave; no memory involved.
                unsafe { libc::dup2(slave.as_raw_fd(), fd) };
            }
        }
    }

    /// The holder's own record of where its time went (`holder.log` in the sandbox's
    /// directory): milliseconds since the fork, one event per line.
    struct Timeline {
        file: Option<std::fs::File>,
        since: std::time::Instant,
    }

    impl Timeline {
        fn note(&mut self, event: std::fmt::Arguments<'_>) {
            use std::io::Write;
            if let Some(f) = &mut self.file {
                let _ = writeln!(
                    f,
                    "{:>8.1} ms  {event}",
                    self.since.elapsed().as_secs_f64() * 1000.0
                );
            }
        }
    }

    fn main(config: VmConfig, fifo: &Path, start: OwnedFd, terminal: Option<OwnedFd>) -> i32 {
        let mut timeline = Timeline {
            file: fifo
                .parent()
                .and_then(|d| std::fs::File::create(d.join(HOLDER_LOG)).ok()),
            since: std::time::Instant::now(),
        };
        take_terminal(terminal);
        // The VMM takes SIGTERM and SIGINT as "stop the VM" on its own thread: blocked here,
        // before that thread exists, so every thread inherits the mask.
        let Ok(_signals) = StopSignals::block() else {
            return 125;
        };
        // A write end of our own: the read below then waits for a byte instead of seeing the
        // end of file while no `start` has opened the FIFO.
        let Ok(_writer) = std::fs::OpenOptions::new().write(true).open(fifo) else {
            return 125;
        };
        let socket = config.vsock.as_ref().map(|v| v.uds_path.clone());
        let fifo_for_vm = fifo.to_path_buf();
        let (ended_tx, ended_rx) = std::sync::mpsc::channel::<String>();
        let vm = std::thread::spawn(move || {
            let result = sandbox_vmm::run(config);
            let summary = match &result {
                Ok(vm) => format!("vm ended: {:?}; VMM timings {:?}", vm.ending, vm.timings),
                Err(e) => format!("vm failed: {e}"),
            };
            let _ = ended_tx.send(summary);
            // Wakes the main thread if it still waits for `start`.
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo_for_vm) {
                let _ = std::io::Write::write_all(&mut f, &[VM_ENDED]);
            }
            result
        });
        timeline.note(format_args!("vm thread started; waiting for start"));
        let mut byte = [0u8; 1];
        let _ = nix::fcntl::fcntl(&start, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()));
        let started = std::fs::File::from(start).read_exact(&mut byte).is_ok() && byte[0] != VM_ENDED;
        let _ = std::fs::remove_file(fifo);
        timeline.note(format_args!(
            "start: {}",
            if started { "released" } else { "the VM ended first" }
        ));
        let status = if started {
            socket
                .map(|s| run_workload(&s, terminal_mode(), &mut timeline))
                .unwrap_or(125)
        } else {
            125
        };
        // The guest powers off once the workload has ended (init syncs and reports first); a
        // VM that does not within the grace is stopped.
        let ended = match ended_rx.recv_timeout(POWER_OFF_GRACE) {
            Ok(summary) => summary,
            Err(_) => {
                let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
                ended_rx.recv().unwrap_or_default()
            }
        };
        let _ = vm.join();
        timeline.note(format_args!("{ended}"));
        status
    }

    fn terminal_mode() -> bool {
        crate::terminal::is_terminal(0)
    }

    /// Asks the agent to run the workload and relays stdio; its status, or 125.
    fn run_workload(socket: &Path, terminal: bool, timeline: &mut Timeline) -> i32 {
        let agent = match Agent::connect(socket, AGENT_WAIT) {
            Ok(agent) => agent,
            Err(e) => {
                timeline.note(format_args!("{e}"));
                return 125;
            }
        };
        timeline.note(format_args!("agent reached"));
        let forwarded = match crate::vm::exec::Forwarder::block(terminal) {
            Ok(f) => f,
            Err(_) => return 125,
        };
        let session = match agent.run() {
            Ok(session) => session,
            Err(e) => {
                timeline.note(format_args!("{e}"));
                return 125;
            }
        };
        timeline.note(format_args!("workload running: guest pid {}", session.pid()));
        let Ok(forwarding) = forwarded.start(session.controller()) else {
            return 125;
        };
        // SAFETY: descriptors 0-2 stay open for the holder's life.
        let (stdin, stdout, stderr) = unsafe {
            (
                std::os::fd::BorrowedFd::borrow_raw(0),
                std::os::fd::BorrowedFd::borrow_raw(1),
                std::os::fd::BorrowedFd::borrow_raw(2),
            )
        };
        let status = session
            .pump(LocalIo {
                stdin: Some(stdin),
                stdout,
                stderr,
            })
            .unwrap_or(125);
        forwarding.finish();
        timeline.note(format_args!("workload exited: status {status}"));
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_protocol::isolation::MountPlan;
    use std::os::unix::fs::PermissionsExt;

    fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> MountPlan {
        MountPlan {
            destination: destination.into(),
            kind: kind.into(),
            source: source.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn host_files_are_copied_in_and_other_bind_mounts_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o640)).unwrap();
        let hosts = hosts.display().to_string();
        let mut plan = Plan::new(sandbox_protocol::Mode::Vm, vec!["true".into()]);
        plan.isolation.mounts = vec![
            mount("/proc", "proc", "proc", &[]),
            mount("/etc/hosts", "bind", &hosts, &["rbind", "ro"]),
            mount("/etc/hostname", "", &hosts, &["bind"]),
        ];
        let files = copied_files(&plan).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].destination, "/etc/hosts");
        assert_eq!(files[0].contents, b"127.0.0.1 localhost\n");
        assert_eq!((files[0].mode, files[0].read_only), (0o640, true));
        assert!(!files[1].read_only);

        let refused = |m: MountPlan| {
            let mut plan = plan.clone();
            plan.isolation.mounts.push(m);
            copied_files(&plan).unwrap_err().to_string()
        };
        let dir_path = dir.path().display().to_string();
        let e = refused(mount("/data", "bind", &dir_path, &["rbind"]));
        assert!(
            e.contains("/data") && e.contains("not a regular file") && e.contains("container mode"),
            "{e}"
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; COPIED_FILE_MAX as usize + 1]).unwrap();
        let e = refused(mount("/big", "bind", &big.display().to_string(), &["bind"]));
        assert!(e.contains("/big") && e.contains("bytes"), "{e}");
        let e = refused(mount("/gone", "bind", "/no/such/file", &["bind"]));
        assert!(e.contains("/gone") && e.contains("cannot read the source"), "{e}");
        let e = refused(mount("/mnt", "nfs", "server:/export", &[]));
        assert!(e.contains("/mnt") && e.contains("nfs"), "{e}");
    }
}
