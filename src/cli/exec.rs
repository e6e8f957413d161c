//! `sandbox exec ID -- CMD`: another process in a sandbox `sandbox run` is running. In a
//! container it joins the sandbox's namespaces and cgroup (`setns`), with the same isolation as
//! the workload; in a VM the guest agent starts it over vsock. It exits with the process's status.

use anyhow::Context;
use sandbox_core::{Mode, Root};
use sandbox_spec::SandboxSpec;

const EXAMPLES: &str = "\
Examples:
  sandbox run --name web -- sandbox-guest net serve --port 8080 &
  sandbox exec web -- ps                          what runs in it
  sandbox exec -it web -- sh                       a shell inside
  sandbox exec -e DEBUG=1 -u 1000 -w /tmp web -- env
  sandbox ps                                       the ids of running sandboxes

The process gets the sandbox's environment and isolation (namespaces, cgroup, capabilities,
seccomp in a container; the guest kernel in a VM). Without -i it reads /dev/null.";

/// Run another command in a running sandbox (either mode).
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Environment variable KEY=VALUE, after the sandbox's (repeatable).
    #[arg(long = "env", short = 'e', value_parser = SandboxSpec::parse_env, value_name = "K=V")]
    env: Vec<(String, String)>,
    /// Run as UID[:GID] (default: the sandbox's user).
    #[arg(long, short = 'u', value_parser = SandboxSpec::parse_user, value_name = "UID[:GID]")]
    user: Option<(u32, u32)>,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w', value_parser = SandboxSpec::parse_workdir, value_name = "DIR")]
    workdir: Option<String>,
    /// Give the process a terminal (relayed to this one).
    #[arg(long, short = 't')]
    tty: bool,
    /// Keep stdin open for the process.
    #[arg(long, short = 'i')]
    interactive: bool,
    /// The sandbox, as `sandbox ps` lists it (`sandbox run --name` sets it).
    id: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let root = Root::run();
    let found = find_settled(&root, &args.id)?;
    if args.tty && args.interactive {
        anyhow::ensure!(
            sandbox_core::terminal::is_terminal(0),
            "-t with -i needs a terminal on stdin, and stdin is not one: drop -t to pipe input"
        );
    }
    sandbox_core::oci::can_exec(&found)?;
    match found.state.mode {
        Mode::Container => container(&root, args),
        Mode::Vm => sandbox_core::vm::exec::run(
            found.dir.path(),
            &sandbox_core::vm::exec::Request {
                argv: args.command,
                env: args.env,
                cwd: args.workdir,
                user: args.user,
                terminal: args.tty,
                stdin: args.interactive,
            },
        )
        .map_err(Into::into),
    }
}

/// How long `exec` waits for a sandbox that is still being set up (a VM's disks).
const SETTLING: std::time::Duration = std::time::Duration::from_secs(30);

/// Finds sandbox `id`, waiting while it is still being set up.
fn find_settled(root: &Root, id: &str) -> anyhow::Result<sandbox_core::oci::Found> {
    let deadline = std::time::Instant::now() + SETTLING;
    loop {
        let found = match sandbox_core::oci::find(root, id) {
            Ok(found) => found,
            Err(sandbox_core::CoreError::NotFound { id }) => {
                anyhow::bail!("no sandbox {id:?} is running: `sandbox ps` lists the ones that are")
            }
            Err(e) => return Err(e.into()),
        };
        if found.status != sandbox_core::Status::Creating || std::time::Instant::now() > deadline {
            return Ok(found);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// In a container: the OCI exec path (setns into its namespaces and cgroup).
fn container(root: &Root, args: Args) -> anyhow::Result<i32> {
    if !args.interactive {
        stdin_from_null()?;
    }
    let request = sandbox_core::plan::ExecRequest {
        process_json: None,
        args: args.command,
        env: args.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: args.workdir,
        user: args.user,
        terminal: args.tty,
        caps: Vec::new(),
        no_new_privileges: true,
    };
    let console = if args.tty {
        Some(sandbox_core::terminal::ConsoleSocket::new().context("making a console socket")?)
    } else {
        None
    };
    // The stop signals wait (blocked) until the forwarder is in place: one sent as soon as
    // the process runs still reaches it. The exec'd process starts with none blocked.
    let mut forwarded = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGQUIT,
    ] {
        forwarded.add(s);
    }
    forwarded.thread_block().context("blocking the stop signals")?;
    let pid = match sandbox_core::oci::exec(root, &args.id, &request, console.as_ref().map(|c| c.path()), 0) {
        Ok(pid) => pid,
        // Not found (127) or not executable (126): the status a shell would give, one line.
        Err(e @ sandbox_core::CoreError::Container(sandbox_container::ContainerError::ExecFailed { .. })) => {
            eprintln!("sandbox exec: {e}");
            return Ok(e.exit_status());
        }
        Err(e) => return Err(e.into()),
    };
    let session = match console {
        Some(c) => Some(c.attach(args.interactive)?),
        None => None,
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    let forwarder = sandbox_container::process::SignalForwarder::install(pid)?;
    forwarded
        .thread_unblock()
        .context("unblocking the stop signals")?;
    let status = sandbox_container::process::ChildProcess::new(pid).wait()?;
    drop(forwarder);
    if let Some(session) = session {
        session.finish();
    }
    Ok(status)
}

/// Makes this process's stdin `/dev/null`, which the exec'd process inherits.
fn stdin_from_null() -> anyhow::Result<()> {
    let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    nix::unistd::dup2_stdin(&null).context("making /dev/null the stdin")?;
    Ok(())
}
