//! The namespace container launcher behind `sandbox run --mode container`.
//!
//! [`run`] takes a [`SandboxSpec`] and an [`Image`] (unpacked layers) and runs the guest program
//! `sandbox-guest init` as PID 1 of a fresh container: new PID, mount, UTS, IPC, network and
//! cgroup namespaces (plus a user namespace when not root), an overlay root entered with
//! `pivot_root`, OCI-default /dev, /proc and /sys, a cgroup with the requested limits, the
//! default capability set, `no_new_privs` and a seccomp filter. It returns an [`Outcome`].
//!
//! Host state and its owners: the run directory ([`rundir::RunDir`]), the cgroup
//! ([`cgroups::Cgroup`]), the veth pair ([`net::HostLink`]) and the child process
//! ([`process::ChildProcess`]) each remove themselves when dropped, so every early return
//! cleans up; mounts live only in the container's own mount namespace. [`gc`] removes what a
//! killed launcher left behind.
//!
//! The guest program starts with the default capabilities only, so everything that needs more
//! is done by the launcher's first process before `execve`: the hostname, `lo` up, `eth0`'s
//! address and route, tmpfs on /tmp and /run. The Plan therefore carries no hostname (init would
//! fail to set it); init finds the rest already in place.

pub mod caps;
pub mod cgroups;
mod child;
pub mod devices;
mod error;
mod id;
mod image;
pub mod mounts;
pub mod namespaces;
pub mod net;
pub mod process;
pub mod rootfs;
pub mod rundir;
pub mod seccomp;
mod sys;
pub mod timings;

pub use error::ContainerError;
pub use image::{Image, DEFAULT_PATH};
pub use sandbox_protocol::trace::{self, now_ns};

use child::ChildConfig;
use rootfs::BindVolume;
use sandbox_protocol::{self, Mode, Plan, ReadyChannel, VolumePlan};
use sandbox_spec::{format_size, phase, NetMode, Outcome, ResourceFigures, SandboxSpec};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use timings::Timeline;

/// Checks what this host and user allow for `spec`, before any image work: a non-root user
/// needs user namespaces, and gets neither cgroup limits nor `--net host`.
pub fn check_host(spec: &SandboxSpec) -> Result<(), ContainerError> {
    if !namespaces::rootless() {
        return Ok(());
    }
    let uid = nix::unistd::geteuid().as_raw();
    namespaces::check_user_namespaces()?;
    if spec.resources.any() {
        return Err(ContainerError::RootlessUnsupported {
            what: "--memory/--cpus/--pids".into(),
            uid,
            why: "a delegated cgroup to put limits on".into(),
        });
    }
    if spec.net == NetMode::Host {
        return Err(ContainerError::RootlessUnsupported {
            what: "--net host".into(),
            uid,
            why: "CAP_NET_ADMIN on the host to create the veth pair".into(),
        });
    }
    Ok(())
}

/// Runs `spec` in a container made from `image`, timing phases from now.
pub fn run(spec: &SandboxSpec, image: &Image) -> Result<Outcome, ContainerError> {
    run_from(spec, image, now_ns())
}

/// Runs `spec` in a container made from `image`; `started_ns` is the launcher's start (a
/// [`now_ns`] reading), the zero of the timings.
///
/// Call it from a single-threaded launcher (see [`process::spawn`]).
pub fn run_from(spec: &SandboxSpec, image: &Image, started_ns: u64) -> Result<Outcome, ContainerError> {
    let mut timeline = Timeline::new(started_ns);
    if spec.trace {
        trace::enable(started_ns);
    }
    let began = trace::start();

    // Everything that can be refused is refused before anything is created.
    check_host(spec)?;
    let rootless = namespaces::rootless();
    let uid = nix::unistd::geteuid().as_raw();
    let argv = command_argv(spec, image);
    let volume_pairs: Vec<(String, std::path::PathBuf)> = spec
        .volumes
        .iter()
        .map(|v| (v.guest.clone(), v.host.clone()))
        .collect();
    image::check(image, argv.first().map(String::as_str), &volume_pairs)?;
    for volume in &spec.volumes {
        if !volume.host.is_absolute() || !volume.host.is_dir() {
            return Err(ContainerError::Child(format!(
                "volume source {} is not an existing directory: create it, or fix --volume",
                volume.host.display()
            )));
        }
    }
    let user = spec.user.or(image.user);
    let filters = seccomp::default_filters()?;
    trace::step("checks", began, || {
        let (programs, instructions) = filters.size();
        format!(
            "image {} ({} layers), command {argv:?}, rootless {rootless}; seccomp compiled to \
             {programs} BPF programs, {instructions} instructions",
            image.name,
            image.layers.len()
        )
    });

    // Host state, each piece owned by a value that removes it when dropped (in reverse order:
    // child process first, then the veth, the cgroup, and last the run directory).
    let began = trace::start();
    let run_dir = rundir::RunDir::create()?;
    let id = run_dir.id().to_string();
    trace::step("rundir", began, || {
        format!("run directory {}", run_dir.path().display())
    });
    let overlay_options = rootfs::overlay_options(&image.layers, &run_dir.upper(), &run_dir.work())
        .map_err(ContainerError::Child)?;
    let cgroup = if rootless {
        None
    } else {
        let limits = cgroups::Limits {
            memory_bytes: spec.resources.memory_bytes,
            cpus: spec.resources.cpus,
            pids: spec.resources.pids,
        };
        Some(cgroups::Cgroup::create(&id, &limits).map_err(|e| ContainerError::Cgroup(e.to_string()))?)
    };
    if cgroup.is_none() {
        trace::note("cgroup", || {
            "none (rootless: the user namespace gets no delegated cgroup)".into()
        });
    }

    let (go_read, go_write) = process::pipe()?;
    let (status_read, status_write) = process::pipe()?;
    let (ready_read, ready_write) = process::pipe()?;
    let cstring =
        |s: &str| CString::new(s).map_err(|_| ContainerError::Child(format!("{s:?} contains a NUL byte")));
    let config = ChildConfig {
        rootless,
        hostname: spec.hostname.clone().unwrap_or_else(|| format!("sbx-{id}")),
        overlay_options,
        rootfs: run_dir.rootfs(),
        plan_path: run_dir.plan(),
        volumes: spec
            .volumes
            .iter()
            .map(|v| BindVolume {
                host: v.host.clone(),
                guest: v.guest.clone(),
                read_only: v.read_only,
            })
            .collect(),
        filters,
        last_cap: caps::last_cap(),
        host_cgroup_ns: if trace::enabled() {
            namespaces::inode("self", "cgroup")
        } else {
            None
        },
        init_path: cstring(sandbox_protocol::GUEST_PATH_IN_IMAGE)?,
        init_argv: vec![cstring("sandbox-guest")?, cstring("init")?],
        init_env: vec![cstring(&format!("PATH={}", image.path_var()))?],
        go_fd: go_read.as_raw_fd(),
        status_fd: status_write.as_raw_fd(),
        ready_fd: ready_write.as_raw_fd(),
    };

    let began = trace::start();
    let flags = namespaces::clone_flags(rootless);
    let pid = process::spawn(&config, flags)?;
    let mut child = process::ChildProcess::new(pid);
    trace::step("clone", began, || {
        format!("pid {pid} (host view), flags {flags:?}")
    });
    if trace::enabled() {
        trace_namespaces(pid, rootless);
    }
    // The child's ends belong to the child now.
    drop(go_read);
    drop(status_write);
    let ready_fd_number = ready_write.as_raw_fd();
    drop(ready_write);
    let ready_watch = process::watch_ready(ready_read);
    let _forwarder = process::SignalForwarder::install(pid)?;

    let began = trace::start();
    if rootless {
        namespaces::write_id_maps(pid, uid, nix::unistd::getegid().as_raw())?;
    }
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
            if rootless {
                " (written: container root is the launcher's uid)"
            } else {
                " (no user namespace: uids are the host's)"
            }
        )
    });
    if let Some(cg) = &cgroup {
        cg.add_pid(pid)
            .map_err(|e| ContainerError::Cgroup(e.to_string()))?;
    }
    let began = trace::start();
    let link = match spec.net {
        NetMode::Host => {
            Some(net::setup_host_link(&id, pid).map_err(|e| ContainerError::Net(e.to_string()))?)
        }
        NetMode::None => None,
    };
    let net_plan = link.as_ref().map(net::HostLink::guest_plan);
    if let Some(link) = &link {
        trace::step("net.link", began, || {
            format!(
                "veth {} {}/{} on the host <-> eth0 in the container's network namespace",
                link.host_name(),
                link.host_address(),
                link.guest_plan().prefix_len
            )
        });
    }

    let plan = Plan {
        mode: Mode::Container,
        command: argv,
        env: image.env.iter().chain(spec.env.iter()).cloned().collect(),
        // Set by the launcher already: init, with the default capabilities, could not.
        hostname: None,
        workdir: spec.workdir.clone().or_else(|| image.working_dir.clone()),
        user,
        net: net_plan.clone(),
        volumes: spec
            .volumes
            .iter()
            .map(|v| VolumePlan {
                source: v.host.display().to_string(),
                target: v.guest.clone(),
                read_only: v.read_only,
            })
            .collect(),
        ready: ReadyChannel::Fd(ready_fd_number),
    };
    let began = trace::start();
    let plan_json =
        serde_json::to_vec(&plan).map_err(|e| ContainerError::Child(format!("encoding the plan: {e}")))?;
    let plan_len = plan_json.len();
    std::fs::write(run_dir.plan(), plan_json).map_err(|source| ContainerError::RunDir {
        path: run_dir.plan(),
        source,
    })?;
    trace::step("plan", began, || {
        format!("{} ({plan_len} bytes)", run_dir.plan().display())
    });

    let began = trace::start();
    process::send_go(go_write, &child::go_message(net_plan.as_ref()))?;
    trace::step("go", began, || {
        format!("sent to pid {pid}: the container process sets itself up")
    });
    let progress = process::read_progress(status_read);
    if let Some(error) = progress.error {
        child.kill();
        return Err(ContainerError::Child(error));
    }
    for (name, at) in [
        (phase::NAMESPACES_READY, progress.namespaces_ns),
        (phase::ROOTFS_READY, progress.rootfs_ns),
        (phase::EXEC, progress.exec_ns),
    ] {
        if let Some(at) = at {
            timeline.mark_at(name, at);
        }
    }
    trace::note("started", || {
        format!(
            "guest program started: pid {pid} runs {}; the launcher waits",
            sandbox_protocol::GUEST_PATH_IN_IMAGE
        )
    });

    let status = child.wait()?;
    let exited_ns = now_ns();
    let ready_ns = ready_watch.join().ok().flatten();
    if let Some(at) = ready_ns {
        timeline.mark_at(phase::READY, at);
    }
    timeline.mark_at(phase::EXIT, exited_ns);
    trace::note("exited", || format!("pid {pid} status {status}"));

    let oom_killed = cgroup.as_ref().is_some_and(cgroups::Cgroup::oom_killed);
    let stats = cgroup.as_ref().map(cgroups::Cgroup::stats).unwrap_or_default();
    let (exit_status, message) = if oom_killed {
        let limit = spec
            .resources
            .memory_bytes
            .map(|b| format!("memory limit {} (--memory)", format_size(b)))
            .unwrap_or_else(|| "no --memory limit; the host ran out of memory".into());
        (137, Some(format!("killed by the OOM killer: {limit}")))
    } else {
        (status, None)
    };

    trace::note("cgroup.stats", || {
        let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "oom_killed {oom_killed}, memory peak {} B, pids now {}, cpu throttled {} times",
            show(stats.memory_peak_bytes),
            show(stats.pids_current),
            show(stats.cpu_nr_throttled)
        )
    });

    // Tear down in order, reporting failures (drops would only warn).
    drop(child);
    if let Some(link) = link {
        let began = trace::start();
        let name = link.host_name().to_string();
        link.remove().map_err(|e| ContainerError::Net(e.to_string()))?;
        trace::step("net.remove", began, || format!("veth {name}"));
    }
    if let Some(cg) = cgroup {
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
    let began = trace::start();
    let run_path = run_dir.path().to_path_buf();
    drop(run_dir);
    trace::step("rundir.remove", began, || run_path.display().to_string());

    Ok(Outcome {
        exit_status,
        oom_killed,
        message,
        timings: timeline.into_timings(),
        resources: ResourceFigures {
            memory_limit_bytes: spec.resources.memory_bytes,
            memory_peak_bytes: stats.memory_peak_bytes,
            memory_current_bytes: stats.memory_current_bytes,
            cpu_nr_throttled: stats.cpu_nr_throttled,
            cpu_throttled_usec: stats.cpu_throttled_usec,
            pids_current: stats.pids_current,
        },
    })
}

/// Prints one trace line per namespace `clone` created for `pid`, with its inode and the
/// launcher's own for comparison (different inodes: a different namespace).
fn trace_namespaces(pid: nix::unistd::Pid, rootless: bool) {
    let pid = pid.to_string();
    for name in namespaces::cloned_names(rootless) {
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

/// The argv the guest program will run: empty (its `info`) when no command was given,
/// otherwise the image's entrypoint followed by the command.
fn command_argv(spec: &SandboxSpec, image: &Image) -> Vec<String> {
    if spec.command.is_empty() {
        return Vec::new();
    }
    image
        .entrypoint
        .iter()
        .chain(spec.command.iter())
        .cloned()
        .collect()
}

/// What [`gc`] removed, and what it could not.
#[derive(Debug, Default)]
pub struct GcReport {
    pub run_dirs: Vec<String>,
    pub cgroups: Vec<String>,
    pub links: Vec<String>,
    pub errors: Vec<String>,
}

/// Removes what launchers that are gone left behind: their run directories (unmounting
/// anything under them), `sandbox/<id>` cgroups and `sbx<id>` veth pairs. State of launchers
/// still running is left alone.
///
/// Run directories live under this `$SANDBOX_HOME`, but cgroups and links are host-wide and
/// other homes' sandboxes have theirs there too. So a cgroup or link is removed when its run
/// directory here is stale; a cgroup with no run directory here at all only when it is an
/// orphan for sure — no process in it and older than a minute. A link always has a live
/// network namespace behind it (the pair dies with the namespace), so links without a stale
/// run directory are left alone.
pub fn gc() -> GcReport {
    let mut report = GcReport::default();
    // Cgroups are listed before the run directories are read: a launcher creates its run
    // directory before its cgroup, so a live one is always seen below.
    let cgroup_ids = cgroups::list_ids();
    let link_ids = net::list_ids();
    let stale = match rundir::stale() {
        Ok(s) => s,
        Err(e) => {
            report
                .errors
                .push(format!("cannot read {}: {e}", rundir::run_root().display()));
            return report;
        }
    };
    let existing: Vec<String> = std::fs::read_dir(rundir::run_root())
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let stale_ids: Vec<&str> = stale.iter().map(|s| s.id.as_str()).collect();
    let orphan = |id: &str| !existing.iter().any(|e| e == id) && cgroup_is_abandoned(id);
    for id in cgroup_ids
        .iter()
        .filter(|id| stale_ids.contains(&id.as_str()) || orphan(id))
    {
        match cgroups::remove_stale(id) {
            Ok(()) => report.cgroups.push(id.clone()),
            Err(e) => report.errors.push(format!("cgroup sandbox/{id}: {e}")),
        }
    }
    for id in link_ids.iter().filter(|id| stale_ids.contains(&id.as_str())) {
        match net::remove_stale(id) {
            Ok(()) => report.links.push(id.clone()),
            Err(e) => report
                .errors
                .push(format!("link {}: {e}", net::host_name_for(id))),
        }
    }
    for run in stale {
        rundir::remove(&run.path);
        if run.path.exists() {
            report.errors.push(format!(
                "run directory {} could not be removed",
                run.path.display()
            ));
        } else {
            report.run_dirs.push(run.id);
        }
    }
    report
}

/// Whether `sandbox/<id>` holds no process on any hierarchy and was created over a minute ago.
fn cgroup_is_abandoned(id: &str) -> bool {
    let Ok(mounts) = cgroups::Mounts::read() else {
        return false;
    };
    mounts.all_roots().iter().all(|root| {
        let dir = root.join("sandbox").join(id);
        if !dir.exists() {
            return true;
        }
        let empty = std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
        let old = std::fs::metadata(&dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|d| d.as_secs() >= 60));
        empty && old
    })
}
