//! The runtime core: what both modes share, between the command lines (`sandbox`,
//! `sandbox-runtime`) and the two backends.
//!
//! - [`id`]: what may name a sandbox; [`state`]: where a sandbox lives between commands (its
//!   directory, `state.json`, which process holds it, its status);
//! - [`plan`]: the one `(spec or OCI bundle, image) → Plan` path;
//! - [`backend`]: the lifecycle (create, start, wait, kill, delete, pause, resume, stats) that
//!   [`container`] and [`vm`] implement; [`lifecycle`]: `sandbox run` as create + start + wait +
//!   delete; [`oci`]: the same lifecycle one command at a time, for `sandbox-runtime`; [`gc`]:
//!   what dead sandboxes left behind;
//! - [`address`]: which /30 a sandbox's network link gets, in both modes;
//! - [`timeline`]: phase timings from the machine-wide clock (the trace lines themselves are
//!   `sandbox_protocol::trace`, shared with the guest and the VMM).

pub mod address;
pub mod backend;
pub mod container;
mod error;
pub mod gc;
pub mod id;
pub mod lifecycle;
pub mod oci;
pub mod plan;
pub mod state;
pub mod terminal;
pub mod timeline;
pub mod userns;
pub mod vm;

pub use backend::{Backend, CreateRequest, Created, Holding, Stats};
pub use error::CoreError;
pub use sandbox_protocol::trace;
pub use state::{Mode, Root, SandboxDir, State, Status};

use sandbox_image::ResolvedImage;
use sandbox_spec::{NetMode, Outcome, SandboxSpec};

/// What `sandbox run` checks of the host before it resolves the image: a non-root user needs
/// user namespaces and gets neither cgroup limits nor `--net host` (nor `--userns`, see
/// [`userns::check`]); VM mode needs a kernel, a KVM that can run it, and limits it can honour.
pub fn check_host(mode: Mode, spec: &SandboxSpec, vm: &vm::VmOptions) -> Result<(), CoreError> {
    check_cpus(spec.resources.cpus, host_cpus())?;
    userns::check(mode, spec)?;
    match mode {
        Mode::Container => {
            check_container_memory(spec.resources.memory_bytes)?;
            if !sandbox_container::namespaces::rootless() {
                return Ok(());
            }
            let uid = nix::unistd::geteuid().as_raw();
            sandbox_container::namespaces::check_user_namespaces()?;
            let refuse = |what: &str, why: &str| {
                CoreError::Container(sandbox_container::ContainerError::RootlessUnsupported {
                    what: what.into(),
                    uid,
                    why: why.into(),
                })
            };
            if spec.resources.any() {
                return Err(refuse(
                    "--memory/--cpus/--pids",
                    "a delegated cgroup to put limits on",
                ));
            }
            if spec.net == NetMode::Host {
                return Err(refuse(
                    "--net host",
                    "CAP_NET_ADMIN on the host to create the veth pair",
                ));
            }
            Ok(())
        }
        Mode::Vm => {
            let resources = plan::spec_resources(&spec.resources);
            let volumes: Vec<sandbox_protocol::VolumePlan> = spec
                .volumes
                .iter()
                .map(|v| sandbox_protocol::VolumePlan {
                    source: v.host.display().to_string(),
                    target: v.guest.clone(),
                    read_only: v.read_only,
                })
                .collect();
            vm::check(&resources, &volumes, vm)?;
            Ok(())
        }
    }
}

/// The least memory limit a container starts in: its set-up, `sandbox-guest init` and the
/// command are all charged to it (about 1 MiB measured for `sh` here); below this Docker's floor,
/// the set-up itself risks the OOM killer and the run would end as if the command had.
pub const MIN_CONTAINER_MEMORY: u64 = 6 << 20;

/// The CPUs this process may run on (its affinity), which `--cpus` cannot exceed.
pub fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Refuses `--cpus` above `host` CPUs: a quota beyond them is never used, and vCPUs beyond them
/// only take turns.
fn check_cpus(cpus: Option<f64>, host: usize) -> Result<(), CoreError> {
    match cpus {
        Some(c) if c > host as f64 => Err(CoreError::AboveHost {
            what: "--cpus",
            value: format!("{c}"),
            host: format!("{host} CPUs"),
            remedy: "give at most that many",
        }),
        _ => Ok(()),
    }
}

/// Refuses a container memory limit too small for the set-up to survive.
fn check_container_memory(memory: Option<u64>) -> Result<(), CoreError> {
    match memory {
        Some(m) if m < MIN_CONTAINER_MEMORY => Err(CoreError::MemoryTooSmall {
            given: sandbox_spec::format_size(m),
            least: sandbox_spec::format_size(MIN_CONTAINER_MEMORY),
        }),
        _ => Ok(()),
    }
}

/// How a `sandbox run` ended, with VM mode's extras.
#[derive(Debug)]
pub struct RunResult {
    pub outcome: Outcome,
    pub vm: Option<vm::VmRun>,
}

/// `sandbox run`: creates the sandbox `spec` describes from `image` in `mode`, starts it,
/// waits for it and deletes it. `started_ns` is the launcher's start (the zero of the timings).
pub fn run_spec(
    spec: &SandboxSpec,
    image: &ResolvedImage,
    mode: Mode,
    vm_opts: vm::VmOptions,
    started_ns: u64,
) -> Result<RunResult, CoreError> {
    if spec.trace {
        trace::enable(started_ns);
    }
    userns::check(mode, spec)?;
    let shifted;
    let image = match spec.userns {
        Some(range) => {
            shifted = userns::shift_image(image, range)?;
            &shifted
        }
        None => image,
    };
    let root = Root::run();
    let id = match &spec.name {
        Some(name) => {
            id::check(name)?;
            if root.path().join(name).exists() {
                return Err(CoreError::Exists { id: name.clone() });
            }
            name.clone()
        }
        None => root.new_id(),
    };
    let assembled = plan::assemble(plan::Source::Spec { spec, image }, mode, &id)?;
    match mode {
        Mode::Container => {
            let mut backend = container::ContainerBackend::new();
            let outcome = lifecycle::run(
                &mut backend,
                &assembled,
                &root,
                &id,
                spec.net,
                spec.interactive,
                started_ns,
            )?;
            Ok(RunResult { outcome, vm: None })
        }
        Mode::Vm => {
            let mut backend = vm::VmBackend::new(image.clone(), vm_opts);
            let outcome = lifecycle::run(
                &mut backend,
                &assembled,
                &root,
                &id,
                spec.net,
                spec.interactive,
                started_ns,
            )?;
            Ok(RunResult {
                outcome,
                vm: backend.take_run(),
            })
        }
    }
}
