//! `run`: create + start, then wait for the container's process and exit with its status
//! (128 + N for a signal), deleting the container afterwards; `--detach` returns once it runs.

use sandbox_core::oci::CreateOptions;
use sandbox_core::Root;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle: a directory with config.json (default: the current directory).
    #[arg(long, short = 'b', value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Return once the process runs (it stays a child of whoever runs this command's parent).
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Keep the container's state after it exits (delete it yourself).
    #[arg(long)]
    pub keep: bool,
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub preserve_fds: u32,
    #[arg(long)]
    pub no_pivot: bool,
    #[arg(long)]
    pub no_new_keyring: bool,
    pub id: String,
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    let bundle = crate::create::bundle_dir(args.bundle)?;
    let opts = CreateOptions {
        console_socket: crate::create::absolute(args.console_socket)?,
        pid_file: crate::create::absolute(args.pid_file)?,
        preserve_fds: args.preserve_fds,
    };
    let state = sandbox_core::oci::create(root, &args.id, &bundle, crate::invoked_mode(), &opts)?;
    let pid = nix::unistd::Pid::from_raw(state.pid);
    // Signals to this command go on to the container's process while it runs.
    let forwarder = sandbox_container::process::SignalForwarder::install(pid)?;
    if let Err(e) = sandbox_core::oci::start(root, &args.id) {
        let _ = sandbox_core::oci::delete(root, &args.id, true);
        return Err(e.into());
    }
    if args.detach {
        return Ok(0);
    }
    // The container's first process is this command's child: its status is ours to collect.
    let status = sandbox_container::process::ChildProcess::new(pid).wait()?;
    drop(forwarder);
    if !args.keep {
        sandbox_core::oci::delete(root, &args.id, true)?;
    }
    Ok(status)
}
