//! `sandbox-guest init`: PID 1 of every sandbox. It reads its [`Plan`](sandbox_protocol::Plan),
//! prepares what the mode needs (a VM: API filesystems, volumes, network; a container: only
//! what the launcher left out), runs the workload as its child while forwarding signals and
//! reaping orphans, and ends with the workload's status — a container by exiting, a VM through
//! the boot/exit device and a reboot.
//!
//! In a VM with a vsock device init also runs the guest [`agent`] (exec, signal, stats, ps for
//! the host), and a plan started `on_request` waits for the agent's `run` to start the
//! workload. Without one (and always in a container) there is no agent.
//!
//! Init never panics out and never hangs a VM: any failure before the workload runs is one line
//! on stderr and status 1, reported like a workload's status.

pub mod agent;
pub mod confine;
pub mod console;
pub mod exec;
pub mod mounts;

pub mod plan;
pub mod power;
pub mod reaper;

use sandbox_protocol::{exit_device::Event, ifconfig, Mode, Plan, StartMode, PLAN_ENV};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Why init could not run the workload.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("init must run as PID 1 (this is PID {0}): start it as a VM's init or in a new PID namespace (`sandbox run`)")]
    NotPid1(u32),
    #[error(transparent)]
    Plan(#[from] plan::PlanLoadError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error("network: {0}")]
    Net(#[from] ifconfig::NetError),
    #[error("cannot set the hostname to {name:?}: {errno}")]
    Hostname { name: String, errno: nix::errno::Errno },
    #[error("cannot block signals: {0}")]
    Signals(nix::errno::Errno),
    #[error(transparent)]
    Spawn(#[from] exec::SpawnError),
    #[error(
        "the plan starts the workload on request (start: on_request), which takes the guest agent, \
         and the agent needs a vsock device: this sandbox has none (a container, or a VM without \
         one); give the VM a vsock device, or use start: boot"
    )]
    NoAgent,
}

/// How long init waits, once the workload has ended, for the guest agent's sessions to
/// finish (their last output and status sent, the host closing) before the VM goes down.
const SESSIONS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How this init ends, known as soon as it knows it is in a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Exit with the status.
    Exit,
    /// Report through the boot/exit device, then reboot.
    Vm,
}

/// Runs init; returns the status to exit with (a VM reboots instead, unless that fails).
pub fn main() -> i32 {
    let ending = Cell::new(Ending::Exit);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&ending)));
    let status = match outcome {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            eprintln!("sandbox-guest init: {e}");
            1
        }
        Err(_) => {
            eprintln!("sandbox-guest init: internal error (a bug in sandbox-guest): giving up");
            1
        }
    };
    finish(ending.get(), status)
}

/// Reads the plan: `SANDBOX_PLAN`, else the kernel command line (then this is a VM, and the
/// VMM hears "init started" before anything slow happens).
fn load_plan(ending: &Cell<Ending>) -> Result<Plan, InitError> {
    if let Some(value) = std::env::var_os(PLAN_ENV).filter(|v| !v.is_empty()) {
        return Ok(plan::read_env_plan(&value.to_string_lossy())?);
    }
    mounts::ensure_proc()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(plan::PlanLoadError::Cmdline)?;
    let device = plan::cmdline_plan_device(&cmdline).ok_or(plan::PlanLoadError::Missing)?;
    ending.set(Ending::Vm);
    report_started();
    mounts::ensure_dev()?;
    Ok(plan::read_plan_device(&device)?)
}

fn report_started() {
    if let Err(e) = power::report(Event::InitStarted) {
        eprintln!("sandbox-guest init: warning: cannot report the start to the VMM: {e}");
    }
}

fn run(ending: &Cell<Ending>) -> Result<i32, InitError> {
    let pid = std::process::id();
    if pid != 1 {
        return Err(InitError::NotPid1(pid));
    }
    let plan = load_plan(ending)?;
    let vm = plan.mode == Mode::Vm;
    if vm && ending.get() != Ending::Vm {
        ending.set(Ending::Vm);
        report_started();
    }
    if vm {
        let protected = mounts::ProtectedPaths {
            masked: &plan.isolation.masked_paths,
            read_only: &plan.isolation.readonly_paths,
        };
        mounts::setup_vm(&plan.volumes, plan.workload_root.as_ref(), protected)?;
        if plan.workload_root.is_some() {
            exec::set_workload_root(sandbox_protocol::WORKLOAD_ROOT_MOUNT);
        }
        if let Some(c) = &plan.confinement {
            exec::set_confinement(confine::Confinement::new(c));
        }
        mounts::ensure_console_fds();
        if !plan.process.terminal {
            console::no_echo();
        }
    } else {
        mounts::setup_container();
    }
    if let Err(e) = ifconfig::bring_up_loopback() {
        eprintln!("sandbox-guest init: warning: loopback: {e}");
    }
    if let Some(net_plan) = &plan.net {
        ifconfig::configure(net_plan, vm)?;
    }
    // A container launcher sets the hostname before it drops CAP_SYS_ADMIN; only change it here
    // when it differs, so that case needs no capability.
    let current = nix::unistd::gethostname().ok();
    if let Some(name) = plan
        .hostname
        .as_ref()
        .filter(|n| current.as_deref() != Some(std::ffi::OsStr::new(n)))
    {
        nix::unistd::sethostname(name).map_err(|errno| InitError::Hostname {
            name: name.clone(),
            errno,
        })?;
    }
    let prepared = Arc::new(exec::prepare(&plan)?);
    // Before any thread exists: every thread inherits the mask, so the waited-for signals stay
    // pending for the main thread.
    reaper::block_signals().map_err(InitError::Signals)?;
    let on_request = plan.start == StartMode::OnRequest;
    let agent = if vm {
        let run = on_request.then(|| prepared.clone());
        agent::start(&plan, run, Arc::new(reaper::Children::for_init()))
    } else {
        None
    };
    let Some(agent) = agent else {
        if on_request {
            return Err(InitError::NoAgent);
        }
        let child = exec::spawn(&prepared)?;
        let status = reaper::wait_for(child);
        reaper::kill_remaining();
        return Ok(status);
    };
    if !on_request {
        agent
            .children()
            .spawn_workload(false, || exec::spawn(&prepared))?;
    }
    let status = reaper::wait_for_workload(agent.children());
    reaper::kill_remaining_into(agent.children());
    // The host hears every session's end (a run's status above all) before the VM goes.
    agent.wait_sessions(SESSIONS_GRACE);
    Ok(status)
}

/// Ends init: a container exits with `status`; a VM reports it, syncs and reboots.
fn finish(ending: Ending, status: i32) -> i32 {
    if ending == Ending::Exit {
        return status;
    }
    power::sync_all();
    if let Err(e) = power::report(Event::Exit((status & 0xff) as u8)) {
        eprintln!("sandbox-guest init: cannot report exit status {status} to the VMM: {e}");
        return status;
    }
    let e = power::reboot_now();
    eprintln!("sandbox-guest init: reboot failed: {e}");
    status
}
