//! The lifecycle as one process drives it (`sandbox run`): create, start, wait, delete, each
//! through the [`Backend`], with the sandbox's state written before anything exists on the host
//! (so `sandbox gc` finds whatever a killed launcher left) and updated once it is created.

use crate::backend::{Backend, CreateRequest, Holding};
use crate::error::CoreError;
use crate::plan::Assembled;
use crate::state::{Holder, Root, SandboxDir, State, STATE_VERSION};
use sandbox_spec::{NetMode, Outcome};

/// Creates sandbox `id`'s directory under `root` (traced as `rundir`).
pub fn create_dir(root: &Root, id: &str) -> Result<SandboxDir, CoreError> {
    let began = sandbox_protocol::trace::start();
    let dir = root.create(Some(id))?;
    sandbox_protocol::trace::step("rundir", began, || {
        format!("run directory {}", dir.path().display())
    });
    Ok(dir)
}

/// A state record for a sandbox being created by this process.
pub fn initial_state(
    dir: &SandboxDir,
    assembled: &Assembled,
    mode: crate::state::Mode,
    bundle: &str,
) -> State {
    State {
        version: STATE_VERSION,
        id: dir.id().to_string(),
        mode,
        holder: Holder::me(),
        pid: 0,
        bundle: bundle.to_string(),
        rootfs: String::new(),
        created: sandbox_image::time::now_rfc3339(),
        oci_version: assembled.oci_version.clone(),
        annotations: assembled.annotations.clone(),
        cgroup_dirs: Vec::new(),
        cgroup_created: Vec::new(),
        link: None,
        hooks: assembled.hooks.clone(),
        started: false,
    }
}

/// With a terminal (`-t`): the relay between the launcher's terminal and the sandbox's (where
/// the backend has one; the VMM reads stdin and writes the console itself), and the launcher's
/// terminal in raw mode when the workload reads it (`-i`).
fn attach_terminal(
    backend: &mut dyn Backend,
    assembled: &Assembled,
    keep_stdin: bool,
) -> Result<Option<crate::terminal::Session>, CoreError> {
    if !assembled.plan.process.terminal {
        return Ok(None);
    }
    let sys = |what: &'static str, errno: nix::errno::Errno| CoreError::Terminal { what, errno };
    let ends = backend.terminal(keep_stdin)?;
    let raw = if keep_stdin {
        crate::terminal::RawMode::enter().map_err(|e| sys("putting the terminal in raw mode", e))?
    } else {
        None
    };
    let relay = ends
        .map(crate::terminal::relay)
        .transpose()
        .map_err(|e| sys("starting the terminal relay", e))?;
    Ok(Some(crate::terminal::Session { relay, raw }))
}

/// Creates, starts and waits for the sandbox `assembled` describes (as `id` under `root`), then
/// deletes it; returns how it ended. Whatever fails, what was created is removed.
pub fn run(
    backend: &mut dyn Backend,
    assembled: &Assembled,
    root: &Root,
    id: &str,
    net: NetMode,
    keep_stdin: bool,
    started_ns: u64,
) -> Result<Outcome, CoreError> {
    let request = CreateRequest {
        assembled,
        root,
        id,
        holding: Holding::Attached { keep_stdin },
        net,
        started_ns,
    };
    backend.check(&request)?;
    let dir = create_dir(root, id)?;
    let mut state = initial_state(&dir, assembled, backend.mode(), &assembled.source_name);
    dir.save(&state)?;
    let created = backend.create(&request, &dir)?;
    state.pid = created.pid;
    state.rootfs = created.rootfs;
    state.cgroup_dirs = created.cgroup_dirs;
    state.link = created.link;
    dir.save(&state)?;
    let outcome = attach_terminal(backend, assembled, keep_stdin).and_then(|terminal| {
        let outcome = backend.start(&dir, &state).and_then(|()| {
            state.started = true;
            backend.wait(&state)
        });
        // The sandbox's last output is written, and the launcher's terminal restored, before
        // anything else is printed.
        if let Some(session) = terminal {
            session.finish();
        }
        outcome
    });
    let deleted = backend.delete(dir, &state);
    let outcome = outcome?;
    deleted?;
    Ok(outcome)
}
