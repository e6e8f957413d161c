//! Container mode as a [`Backend`]: the runtime core's decisions (directories, ids, addresses,
//! the Plan) handed to the launcher in `sandbox-container`, step by step.
//!
//! `sandbox run` keeps the launch in this process ([`Local`]): the start goes down a pipe, the
//! end comes from `waitpid`, and teardown removes the veth, the cgroup and the run directory.
//! The OCI runtime detaches after "created": `start` writes the state directory's FIFO, and
//! `kill`, `delete`, `pause` and `stats` work from the pid and cgroup the state recorded.

use crate::backend::{Backend, CreateRequest, Created, Holding, Stats};
use crate::error::CoreError;
use crate::plan::{Assembled, Entry, RootKind};
use crate::state::{Liveness, Mode, SandboxDir, State, Status};
use crate::timeline::Timeline;
use sandbox_container::cgroups::{Cgroup, Placement};
use sandbox_container::net::HostLink;
use sandbox_container::{ContainerHooks, Launch, OverlayDirs, RootSource, Spawned, Start};
use sandbox_protocol::trace;
use sandbox_protocol::ReadyChannel;
use sandbox_spec::{format_size, phase, NetMode, Outcome, ResourceFigures};
use std::time::{Duration, Instant};

/// Container mode.
#[derive(Default)]
pub struct ContainerBackend {
    /// The launch `check` prepared, spawned by `create`.
    prepared: Option<sandbox_container::Prepared>,
    local: Option<Local>,
}

/// A launch this process holds (`sandbox run`).
struct Local {
    spawned: Spawned,
    link: Option<HostLink>,
    started_ns: u64,
    memory_limit: Option<u64>,
}

impl ContainerBackend {
    pub fn new() -> ContainerBackend {
        ContainerBackend::default()
    }
}

/// What the launcher needs beyond the Plan (paths inside the sandbox's directory-to-be).
fn launch_for(request: &CreateRequest) -> Result<Launch, CoreError> {
    let a: &Assembled = request.assembled;
    let dir = request.dir_path();
    let (root, rootfs) = match &a.root {
        RootKind::Layers(layers) if namespace_root(&a.plan).is_some() => (
            RootSource::UserNamespaceOverlay(OverlayDirs {
                lower: layers.clone(),
                upper: dir.join("upper"),
                work: dir.join("work"),
            }),
            dir.join("rootfs"),
        ),
        RootKind::Layers(layers) => {
            let options =
                sandbox_container::rootfs::overlay_options(layers, &dir.join("upper"), &dir.join("work"))
                    .map_err(|e| CoreError::Container(sandbox_container::ContainerError::Config(e)))?;
            (RootSource::Overlay(options), dir.join("rootfs"))
        }
        RootKind::Directory(path) => (RootSource::Directory(path.clone()), path.clone()),
    };
    let (start, console_socket, preserve_fds) = match &request.holding {
        Holding::Attached { .. } => (Start::Pipe, None, 0),
        Holding::Detached {
            console_socket,
            preserve_fds,
        } => (
            Start::Fifo(dir.join(crate::state::EXEC_FIFO)),
            console_socket.clone(),
            *preserve_fds,
        ),
    };
    let entry = match a.entry {
        Entry::GuestInit => sandbox_container::Entry::GuestInit {
            plan: dir.join("plan.json"),
            path_var: a
                .plan
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map_or(sandbox_protocol::DEFAULT_PATH.to_string(), |(_, v)| v.clone()),
        },
        Entry::Direct => sandbox_container::Entry::Direct,
        Entry::Nothing => sandbox_container::Entry::Nothing,
    };
    let placement = Placement::from_oci(a.cgroups_path.as_deref(), request.id)
        .map_err(|e| CoreError::Container(sandbox_container::ContainerError::Cgroup(e.to_string())))?;
    Ok(Launch {
        id: request.id.to_string(),
        root,
        rootfs,
        placement,
        pausable: matches!(request.holding, Holding::Detached { .. }),
        entry,
        start,
        console_socket,
        keep_stdin: !matches!(request.holding, Holding::Attached { keep_stdin: false }),
        preserve_fds,
        hooks: ContainerHooks {
            create_runtime: a.hooks.create_runtime.clone(),
            create_container: a.hooks.create_container.clone(),
            start_container: a.hooks.start_container.clone(),
            state: hook_state_template(a, request.id),
        },
    })
}

/// The host uid and gid of the container's root when a root launcher gives it a user namespace
/// of its own (`sandbox run --userns`). That root is an unprivileged host id: the first process
/// mounts the overlay from descriptors it opened before becoming it, and the overlay's upper and
/// work dirs are made its own.
fn namespace_root(plan: &sandbox_protocol::Plan) -> Option<(u32, u32)> {
    use sandbox_protocol::isolation::{IdMapping, NamespaceKind};
    if sandbox_container::namespaces::rootless() {
        return None;
    }
    let iso = &plan.isolation;
    let own = iso
        .namespaces
        .iter()
        .any(|n| n.kind == NamespaceKind::User && n.path.is_none());
    let root_of = |maps: &[IdMapping]| {
        maps.iter()
            .find(|m| m.container_id == 0 && m.size > 0)
            .map(|m| m.host_id)
    };
    own.then(|| Some((root_of(&iso.uid_mappings)?, root_of(&iso.gid_mappings)?)))
        .flatten()
}

/// The OCI state for hooks, with the status and pid left for the launcher to fill in.
fn hook_state_template(a: &Assembled, id: &str) -> String {
    let mut v = serde_json::json!({
        "ociVersion": a.oci_version,
        "id": id,
        "status": "@STATUS@",
        "pid": 0,
        "bundle": a.source_name,
    });
    if !a.annotations.is_empty() {
        v["annotations"] = serde_json::to_value(&a.annotations).unwrap_or_default();
    }
    v.to_string()
}

/// Writes the Plan `sandbox-guest init` reads, now that the ready pipe's number is known.
fn write_plan(
    a: &Assembled,
    dir: &SandboxDir,
    spawned: &Spawned,
    net: Option<sandbox_protocol::NetPlan>,
) -> Result<(), CoreError> {
    let mut plan = a.plan.clone();
    plan.net = net;
    if let Some(fd) = spawned.ready_fd() {
        plan.ready = ReadyChannel::Fd(fd);
    }
    let began = trace::start();
    let json =
        serde_json::to_vec(&plan).map_err(|e| CoreError::Internal(format!("encoding the plan: {e}")))?;
    let len = json.len();
    dir.write_private("plan.json", &json)?;
    trace::step("plan", began, || {
        format!("{} ({len} bytes)", dir.plan().display())
    });
    Ok(())
}

impl Backend for ContainerBackend {
    fn mode(&self) -> Mode {
        Mode::Container
    }

    fn check(&mut self, request: &CreateRequest) -> Result<(), CoreError> {
        let launch = launch_for(request)?;
        self.prepared = Some(sandbox_container::prepare(&request.assembled.plan, &launch)?);
        Ok(())
    }

    fn create(&mut self, request: &CreateRequest, dir: &SandboxDir) -> Result<Created, CoreError> {
        let a = request.assembled;
        let prepared = self
            .prepared
            .take()
            .ok_or_else(|| CoreError::Internal("create before check".into()))?;
        let rootfs = match &a.root {
            RootKind::Layers(_) => {
                dir.make_overlay_dirs(namespace_root(&a.plan))?;
                dir.rootfs()
            }
            RootKind::Directory(path) => path.clone(),
        };
        if matches!(request.holding, Holding::Detached { .. }) {
            dir.make_fifo()?;
        }
        let mut spawned = prepared.spawn()?;
        let link = match request.net {
            NetMode::Host => Some(host_link(dir.id(), spawned.pid())?),
            NetMode::None => None,
        };
        let net_plan = link.as_ref().map(HostLink::guest_plan);
        if a.entry == Entry::GuestInit {
            write_plan(a, dir, &spawned, net_plan.clone())?;
        }
        spawned.go(net_plan)?;
        let pid = spawned.pid().as_raw();
        let mut created = Created {
            pid,
            rootfs: rootfs.display().to_string(),
            link: link.as_ref().map(|l| l.host_name().to_string()),
            ..Created::default()
        };
        match request.holding {
            Holding::Attached { .. } => {
                created.cgroup_dirs = spawned.cgroup().map(Cgroup::paths).unwrap_or_default();
                self.local = Some(Local {
                    spawned,
                    link,
                    started_ns: request.started_ns,
                    memory_limit: a.plan.resources.memory.limit.map(|m| m as u64),
                });
            }
            Holding::Detached { .. } => {
                let detached = spawned.detach();
                created.cgroup_dirs = detached.cgroup_dirs;
                created.cgroup_created = detached.cgroup_created;
            }
        }
        Ok(created)
    }

    fn terminal(&mut self, keep_stdin: bool) -> Result<Option<crate::terminal::Ends>, CoreError> {
        let Some(local) = &mut self.local else {
            return Ok(None);
        };
        let Some(master) = local.spawned.take_terminal()? else {
            return Ok(None);
        };
        let dup = |fd: &std::os::fd::OwnedFd| {
            fd.try_clone().map_err(|e| CoreError::Terminal {
                what: "duplicating the pty master",
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
        };
        let output = dup(&master)?;
        let resizer = dup(&master)?;
        Ok(Some(crate::terminal::Ends {
            sandbox_in: master,
            sandbox_out: Some(output),
            stdin: keep_stdin,
            resize: Box::new(move |size| {
                crate::terminal::set_size(std::os::fd::AsRawFd::as_raw_fd(&resizer), size)
            }),
        }))
    }

    fn start(&mut self, dir: &SandboxDir, state: &State) -> Result<(), CoreError> {
        if let Some(local) = &mut self.local {
            local.spawned.start()?;
            trace::note("started", || {
                format!(
                    "guest program started: pid {} runs {}; the launcher waits",
                    local.spawned.pid(),
                    sandbox_protocol::GUEST_PATH_IN_IMAGE
                )
            });
            return Ok(());
        }
        sandbox_container::start_fifo(&dir.fifo())?;
        let _ = std::fs::remove_file(dir.fifo());
        wait_for_exec(state.pid);
        Ok(())
    }

    fn wait(&mut self, _state: &State) -> Result<Outcome, CoreError> {
        let local = self
            .local
            .as_mut()
            .ok_or_else(|| CoreError::Internal("wait on a container this process did not create".into()))?;
        let exited = local.spawned.wait()?;
        let pid = local.spawned.pid();
        trace::note("exited", || format!("pid {pid} status {}", exited.status));
        let mut timeline = Timeline::new(local.started_ns);
        let progress = local.spawned.progress().clone();
        for (name, at) in [
            (phase::NAMESPACES_READY, progress.namespaces_ns),
            (phase::ROOTFS_READY, progress.rootfs_ns),
            (phase::EXEC, progress.exec_ns),
            (phase::READY, exited.ready_ns),
        ] {
            if let Some(at) = at {
                timeline.mark_at(name, at);
            }
        }
        timeline.mark_at(phase::EXIT, exited.exited_ns);
        let stats = &exited.stats;
        trace::note("cgroup.stats", || {
            let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            format!(
                "oom_killed {}, memory peak {} B, pids now {}, cpu throttled {} times",
                exited.oom_killed,
                show(stats.memory_peak_bytes),
                show(stats.pids_current),
                show(stats.cpu_nr_throttled)
            )
        });
        let (exit_status, message) = if exited.oom_killed {
            let limit = local
                .memory_limit
                .map(|b| format!("memory limit {} (--memory)", format_size(b)))
                .unwrap_or_else(|| "no --memory limit; the host ran out of memory".into());
            (137, Some(format!("killed by the OOM killer: {limit}")))
        } else {
            (exited.status, None)
        };
        Ok(Outcome {
            exit_status,
            oom_killed: exited.oom_killed,
            message,
            timings: timeline.into_timings(),
            resources: ResourceFigures {
                memory_limit_bytes: local.memory_limit,
                memory_peak_bytes: stats.memory_peak_bytes,
                memory_current_bytes: stats.memory_current_bytes,
                cpu_nr_throttled: stats.cpu_nr_throttled,
                cpu_throttled_usec: stats.cpu_throttled_usec,
                pids_current: stats.pids_current,
            },
        })
    }

    fn kill(&self, state: &State, signal: i32, all: bool) -> Result<(), CoreError> {
        let signal = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| CoreError::Bundle(format!("signal {signal} is not a signal of this system")))?;
        let cgroup = Cgroup::open(&state.cgroup_dirs, &[]);
        if all {
            for pid in cgroup.pids() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        } else {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid), signal).map_err(|e| {
                CoreError::Container(sandbox_container::ContainerError::sys(
                    format!("sending {signal} to pid {}", state.pid),
                    e,
                ))
            })?;
        }
        if signal == nix::sys::signal::Signal::SIGKILL && cgroup.is_frozen() {
            // A frozen process dies only once thawed.
            let _ = cgroup.freeze(false);
        }
        Ok(())
    }

    fn delete(&mut self, dir: SandboxDir, state: &State) -> Result<(), CoreError> {
        if let Some(local) = self.local.take() {
            return remove_local(local, dir);
        }
        // Whatever still runs in the cgroup goes with it; the first process is dead by now.
        sandbox_container::cgroups::remove_recorded(&state.cgroup_dirs, &state.cgroup_created)
            .map_err(|e| CoreError::Container(sandbox_container::ContainerError::Cgroup(e.to_string())))?;
        dir.remove()
    }

    fn pause(&self, state: &State) -> Result<(), CoreError> {
        Cgroup::open(&state.cgroup_dirs, &[])
            .freeze(true)
            .map_err(|e| CoreError::Container(sandbox_container::ContainerError::Cgroup(e.to_string())))
    }

    fn resume(&self, state: &State) -> Result<(), CoreError> {
        Cgroup::open(&state.cgroup_dirs, &[])
            .freeze(false)
            .map_err(|e| CoreError::Container(sandbox_container::ContainerError::Cgroup(e.to_string())))
    }

    fn stats(&self, state: &State) -> Result<Stats, CoreError> {
        let s = Cgroup::open(&state.cgroup_dirs, &[]).stats();
        Ok(Stats {
            memory_usage_bytes: s.memory_current_bytes,
            memory_max_usage_bytes: s.memory_peak_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            cpu_usage_ns: s.cpu_usage_usec.map(|u| u * 1000),
            cpu_throttled_periods: s.cpu_nr_throttled,
            cpu_throttled_ns: s.cpu_throttled_usec.map(|u| u * 1000),
            cpu_periods: s.cpu_nr_periods,
            pids_current: s.pids_current,
            pids_limit: s.pids_limit,
        })
    }

    fn pids(&self, state: &State) -> Result<Vec<i32>, CoreError> {
        Ok(Cgroup::open(&state.cgroup_dirs, &[]).pids())
    }
}

/// `--net host`: the veth pair into the network namespace of process `pid`, and the host
/// address of a free /30 from the core's allocator.
pub fn host_link(id: &str, pid: nix::unistd::Pid) -> Result<HostLink, CoreError> {
    let began = trace::start();
    let mut link = sandbox_container::net::create_veth(id, pid)?;
    let plan = crate::address::claim(id, link.host_name(), sandbox_container::net::GUEST_INTERFACE)?;
    let host = plan.gateway.unwrap_or(plan.address);
    link.set_addresses(host, plan.address, plan.prefix_len);
    trace::step("net.link", began, || {
        format!(
            "veth {} {}/{} on the host <-> eth0 in the container's network namespace",
            link.host_name(),
            link.host_address(),
            plan.prefix_len
        )
    });
    Ok(link)
}

/// `sandbox run`'s teardown, in order, reporting failures (drops would only warn).
fn remove_local(local: Local, dir: SandboxDir) -> Result<(), CoreError> {
    let Local { spawned, link, .. } = local;
    if let Some(link) = link {
        let began = trace::start();
        let name = link.host_name().to_string();
        link.remove()?;
        trace::step("net.remove", began, || format!("veth {name}"));
    }
    spawned.remove()?;
    let began = trace::start();
    let path = dir.path().to_path_buf();
    dir.remove()?;
    trace::step("rundir.remove", began, || path.display().to_string());
    Ok(())
}

/// After `start`: waits (briefly) until the first process has executed the workload, so a
/// signal sent right after `start` reaches the workload rather than the set-up code.
fn wait_for_exec(pid: i32) {
    use std::os::unix::fs::MetadataExt;
    // The first process is a copy of the runtime binary until it executes the workload.
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let Ok(runtime) = std::fs::metadata("/proc/self/exe").map(id) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match std::fs::metadata(format!("/proc/{pid}/exe")).map(id) {
            Ok(exe) if exe == runtime => std::thread::sleep(Duration::from_micros(200)),
            _ => return,
        }
    }
}

/// The status of a container from its state: see [`State::status`].
pub fn status(dir: &SandboxDir, state: &State) -> Status {
    state.status(dir.path())
}

/// Waits until the first process is gone or a zombie (after SIGKILL), at most `limit`.
pub fn wait_gone(state: &State, limit: Duration) -> bool {
    let first = crate::state::Holder::of(state.pid);
    let deadline = Instant::now() + limit;
    loop {
        if first.liveness() != Liveness::Alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
