//! The OCI runtime's lifecycle: one function per `sandbox-runtime` command, each a separate
//! process finding the container by its state under the runtime's root.
//!
//! `create` assembles the bundle's Plan, refuses what can be refused before anything exists,
//! creates the container up to its workload waiting on the exec FIFO, and hands it over: the
//! container's first process holds it from then on (and is reaped by whoever ran `create`, a
//! shim or conmon). `start` releases it; `state`, `kill`, `pause`, `resume`, `stats` and `pids`
//! read the state; `delete` removes every host object, running the poststop hooks.

use crate::backend::{Backend, CreateRequest, Holding, Stats};
use crate::container::ContainerBackend;
use crate::error::CoreError;
use crate::lifecycle;
use crate::plan::{self, Bundle};
use crate::state::{self, Holder, Liveness, Mode, Root, SandboxDir, State, Status};
use sandbox_spec::NetMode;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `create` needs beyond the bundle.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
}

/// The backend that runs `mode`.
fn backend(mode: Mode, root: &Root) -> Result<Box<dyn Backend>, CoreError> {
    match mode {
        Mode::Container => Ok(Box::new(ContainerBackend::new())),
        Mode::Vm => Ok(Box::new(crate::vm::oci::OciVm::new(root.path()))),
    }
}

/// The bundle annotation that picks the mode (`vm` or `container`), over the runtime's default.
pub const MODE_ANNOTATION: &str = "org.sandbox.mode";

/// The mode a bundle runs in: its [`MODE_ANNOTATION`], else `default` (the name the runtime was
/// invoked by: `sandbox-runtime-vm` runs VMs).
pub fn mode_for(bundle: &Bundle, default: Mode) -> Result<Mode, CoreError> {
    match bundle.annotations().get(MODE_ANNOTATION).map(String::as_str) {
        None => Ok(default),
        Some("vm") => Ok(Mode::Vm),
        Some("container") => Ok(Mode::Container),
        Some(other) => Err(CoreError::Bundle(format!(
            "annotation {MODE_ANNOTATION}={other:?} names no mode: use \"vm\" or \"container\""
        ))),
    }
}

/// The file name a plan is kept under in an OCI container's directory (for `exec`).
pub const PLAN_FILE: &str = "plan.json";

/// `create`: the container `id` from the bundle at `bundle`, under `root`, in the bundle's mode
/// ([`mode_for`]; `default` without the annotation).
pub fn create(
    root: &Root,
    id: &str,
    bundle: &Path,
    default: Mode,
    opts: &CreateOptions,
) -> Result<State, CoreError> {
    crate::id::check(id)?;
    if root.path().join(id).exists() {
        return Err(CoreError::Exists { id: id.to_string() });
    }
    let bundle = Bundle::open(bundle)?;
    let mode = mode_for(&bundle, default)?;
    let assembled = plan::assemble(plan::Source::Bundle(&bundle), mode, id)?;
    let mut backend = backend(mode, root)?;
    let request = CreateRequest {
        assembled: &assembled,
        root,
        id,
        holding: Holding::Detached {
            console_socket: opts.console_socket.clone(),
            preserve_fds: opts.preserve_fds,
        },
        net: NetMode::None,
        started_ns: sandbox_protocol::trace::now_ns(),
    };
    backend.check(&request)?;
    let dir = root.create(Some(id))?;
    let mut state = lifecycle::initial_state(&dir, &assembled, mode, &bundle.dir.display().to_string());
    dir.save(&state)?;
    let json = serde_json::to_vec(&assembled.plan)
        .map_err(|e| CoreError::Internal(format!("encoding the plan: {e}")))?;
    dir.write_private(PLAN_FILE, &json)?;
    let created = backend.create(&request, &dir)?;
    state.holder = Holder::of(created.pid);
    state.pid = created.pid;
    state.rootfs = created.rootfs;
    state.cgroup_dirs = created.cgroup_dirs;
    state.cgroup_created = created.cgroup_created;
    state.link = created.link;
    let saved = dir.save(&state).and_then(|()| match &opts.pid_file {
        Some(path) => write_pid_file(path, created.pid),
        None => Ok(()),
    });
    if let Err(e) = saved {
        // Nothing may be left: the first process dies with its cgroup, the directory with `dir`.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(created.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = sandbox_container::cgroups::remove_recorded(&state.cgroup_dirs, &state.cgroup_created);
        return Err(e);
    }
    dir.keep();
    Ok(state)
}

/// Writes `pid` (digits only, no newline: clients parse it with `Atoi`) atomically.
fn write_pid_file(path: &Path, pid: i32) -> Result<(), CoreError> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let io = |source| CoreError::Io {
        what: "cannot write the pid file",
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, pid.to_string()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A container found by id: its directory, state and status now.
pub struct Found {
    pub dir: SandboxDir,
    pub state: State,
    pub status: Status,
}

/// Finds container `id` under `root`.
pub fn find(root: &Root, id: &str) -> Result<Found, CoreError> {
    let dir = root.open(id)?;
    let state = dir.load()?;
    let status = state.status(dir.path());
    Ok(Found { dir, state, status })
}

fn wrong(found: &Found, what: &str) -> CoreError {
    CoreError::WrongStatus {
        id: found.state.id.clone(),
        status: found.status,
        what: what.to_string(),
    }
}

/// The OCI state of each hook point, as JSON text.
fn hook_state(state: &State, status: Status) -> String {
    state.oci(status).to_string()
}

/// `start`: runs the prestart hooks, releases the workload, runs the poststart hooks.
pub fn start(root: &Root, id: &str) -> Result<(), CoreError> {
    let mut found = find(root, id)?;
    match found.status {
        Status::Created => {}
        Status::Stopped => {
            return Err(wrong(
                &found,
                "cannot start a container that has stopped: delete it",
            ))
        }
        _ => return Err(wrong(&found, "cannot start an already running container")),
    }
    let state = &found.state;
    if let Err(e) = sandbox_container::hooks::run(
        "prestart",
        &state.hooks.prestart,
        &hook_state(state, Status::Created),
    ) {
        // A failed prestart hook stops the container before its workload ever runs.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(state.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        return Err(CoreError::Container(sandbox_container::ContainerError::Hook(e)));
    }
    let mut backend = backend(state.mode, root)?;
    backend.start(&found.dir, state)?;
    found.state.started = true;
    found.dir.save(&found.state)?;
    let state = &found.state;
    if let Err(e) = sandbox_container::hooks::run(
        "poststart",
        &state.hooks.poststart,
        &hook_state(state, Status::Running),
    ) {
        // The spec's answer to a failed poststart hook: a warning, the container runs on.
        eprintln!("sandbox-runtime: warning: {e}");
    }
    Ok(())
}

/// `kill`: `signal` to the workload's first process (or with `all` every process in its
/// cgroup). A stopped container refuses, except with `all` (what is left is signalled).
pub fn kill(root: &Root, id: &str, signal: i32, all: bool) -> Result<(), CoreError> {
    let found = find(root, id)?;
    let backend = backend(found.state.mode, root)?;
    if found.status == Status::Stopped {
        if all {
            return backend.kill(&found.state, signal, true);
        }
        return Err(wrong(&found, "container not running"));
    }
    backend.kill(&found.state, signal, all)
}

/// `delete`: removes a stopped container (with `force` any container, killing it first).
pub fn delete(root: &Root, id: &str, force: bool) -> Result<(), CoreError> {
    let found = match find(root, id) {
        Ok(found) => found,
        Err(CoreError::NotFound { .. }) if force => return Ok(()),
        Err(CoreError::BadState { .. }) if force => {
            return state::remove_dir(&root.path().join(id));
        }
        Err(e) => return Err(e),
    };
    let mut backend = backend(found.state.mode, root)?;
    if found.status != Status::Stopped {
        if !force {
            return Err(wrong(
                &found,
                "cannot delete a container that is not stopped: stop it first (kill), or use --force",
            ));
        }
        backend.kill(&found.state, libc::SIGKILL, true)?;
        let _ = backend.kill(&found.state, libc::SIGKILL, false);
        crate::container::wait_gone(&found.state, Duration::from_secs(10));
    }
    let Found { dir, state, .. } = found;
    let poststop = hook_state(&state, Status::Stopped);
    let hooks = state.hooks.poststop.clone();
    backend.delete(dir, &state)?;
    if let Err(e) = sandbox_container::hooks::run("poststop", &hooks, &poststop) {
        eprintln!("sandbox-runtime: warning: {e}");
    }
    Ok(())
}

/// `pause`.
pub fn pause(root: &Root, id: &str) -> Result<(), CoreError> {
    let found = find(root, id)?;
    if !matches!(found.status, Status::Running | Status::Created) {
        return Err(wrong(&found, "only a running container can be paused"));
    }
    backend(found.state.mode, root)?.pause(&found.state)
}

/// `resume`.
pub fn resume(root: &Root, id: &str) -> Result<(), CoreError> {
    let found = find(root, id)?;
    if found.status != Status::Paused {
        return Err(wrong(&found, "only a paused container can be resumed"));
    }
    backend(found.state.mode, root)?.resume(&found.state)
}

/// The figures of a running container.
pub fn stats(root: &Root, id: &str) -> Result<Stats, CoreError> {
    let found = find(root, id)?;
    if found.status == Status::Stopped {
        return Err(wrong(&found, "a stopped container has no figures"));
    }
    backend(found.state.mode, root)?.stats(&found.state)
}

/// The container's processes (host pids).
pub fn pids(root: &Root, id: &str) -> Result<Vec<i32>, CoreError> {
    let found = find(root, id)?;
    backend(found.state.mode, root)?.pids(&found.state)
}

/// Whether the first process of `state` has ended (gone or a zombie).
pub fn ended(state: &State) -> bool {
    Holder::of(state.pid).liveness() != Liveness::Alive
}

/// `update`: new cgroup limits for a running container.
pub fn update(
    root: &Root,
    id: &str,
    resources: &sandbox_protocol::isolation::ResourcePlan,
) -> Result<(), CoreError> {
    let found = find(root, id)?;
    if found.status == Status::Stopped {
        return Err(wrong(&found, "a stopped container has no limits to change"));
    }
    sandbox_container::cgroups::Cgroup::open(&found.state.cgroup_dirs, &[])
        .update(resources)
        .map_err(|e| CoreError::Container(sandbox_container::ContainerError::Cgroup(e.to_string())))
}

/// Whether a process can be started in `found` now: it must be created or running.
pub fn can_exec(found: &Found) -> Result<(), CoreError> {
    match found.status {
        Status::Running | Status::Created => Ok(()),
        Status::Paused => Err(wrong(found, "cannot exec in a paused sandbox: resume it first")),
        Status::Creating => Err(wrong(
            found,
            "cannot exec in a sandbox still being set up: try again once it runs",
        )),
        Status::Stopped => Err(wrong(
            found,
            "cannot exec in a stopped sandbox: its workload has ended; start a new one",
        )),
    }
}

/// `exec`: the process `request` describes in running container `id`; returns its pid once it
/// executes. The process is this command's child.
pub fn exec(
    root: &Root,
    id: &str,
    request: &plan::ExecRequest,
    console_socket: Option<PathBuf>,
    preserve_fds: u32,
) -> Result<i32, CoreError> {
    let found = find(root, id)?;
    can_exec(&found)?;
    let plan_path = found.dir.path().join(PLAN_FILE);
    let text = std::fs::read_to_string(&plan_path).map_err(|source| CoreError::Io {
        what: "cannot read the container's plan",
        path: plan_path.clone(),
        source,
    })?;
    let container: sandbox_protocol::Plan = serde_json::from_str(&text).map_err(|e| CoreError::BadState {
        path: plan_path,
        why: e.to_string(),
    })?;
    let plan = plan::exec_plan(&container, request)?;
    if found.state.mode == Mode::Vm {
        let request = crate::vm::exec::Request {
            argv: plan.command.clone(),
            env: plan.env.clone(),
            cwd: plan.workdir.clone(),
            user: plan.user,
            terminal: plan.process.terminal,
            stdin: true,
        };
        return crate::vm::oci::spawn_exec(found.dir.path(), request, console_socket.as_deref());
    }
    let target = sandbox_container::exec::ExecTarget {
        pid: nix::unistd::Pid::from_raw(found.state.pid),
        cgroup_dirs: found.state.cgroup_dirs.clone(),
        console_socket,
        preserve_fds,
    };
    Ok(sandbox_container::exec::spawn(&plan, &target)?.as_raw())
}
