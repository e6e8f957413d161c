//! `exec`: another process in a running container — an OCI process JSON (`--process FILE`, what
//! conmon and containerd's shim pass) or a command after the id. Without --detach this command
//! waits for it and exits with its status; with --detach it returns once it runs.

use sandbox_core::plan::ExecRequest;
use sandbox_core::Root;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process as OCI `process` JSON.
    #[arg(long, short = 'p', value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Return once the process runs.
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A terminal for the process (its master end goes to --console-socket).
    #[arg(long, short = 't')]
    pub tty: bool,
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// KEY=VALUE added to the container's environment (repeatable).
    #[arg(long, short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// UID[:GID].
    #[arg(long, short = 'u', value_parser = sandbox_spec::SandboxSpec::parse_user, value_name = "UID[:GID]")]
    pub user: Option<(u32, u32)>,
    /// A capability added to the container's (repeatable).
    #[arg(long, short = 'c', value_name = "CAP")]
    pub cap: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub preserve_fds: u32,
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    let process_json = match &args.process {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read --process {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let request = ExecRequest {
        process_json,
        args: args.command,
        env: args.env,
        cwd: args.cwd,
        user: args.user,
        terminal: args.tty,
        caps: args.cap,
        no_new_privileges: args.no_new_privs,
    };
    let console = crate::create::absolute(args.console_socket)?;
    let pid = sandbox_core::oci::exec(root, &args.id, &request, console, args.preserve_fds)?;
    if let Some(path) = crate::create::absolute(args.pid_file)? {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, pid.to_string())?;
        std::fs::rename(&tmp, &path)?;
    }
    if args.detach {
        return Ok(0);
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    let forwarder = sandbox_container::process::SignalForwarder::install(pid)?;
    let status = sandbox_container::process::ChildProcess::new(pid).wait()?;
    drop(forwarder);
    Ok(status)
}
