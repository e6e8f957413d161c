//! `create`: a container from a bundle, set up with its process waiting for `start`. The
//! container's process keeps this command's stdin, stdout and stderr (or a terminal, sent to
//! --console-socket), and becomes the caller's child once this command exits.

use sandbox_core::oci::CreateOptions;
use sandbox_core::Root;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle: a directory with config.json (default: the current directory).
    #[arg(long, short = 'b', value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Write the container process's pid here (digits, no newline).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A unix socket to send the terminal's master end to (process.terminal: true).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Pass descriptors 3 to 3+N-1 on to the container's process.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub preserve_fds: u32,
    /// Accepted for runc compatibility (pivot_root is always used).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility (no session keyring is created).
    #[arg(long)]
    pub no_new_keyring: bool,
    /// The container id (1-64 characters of A-Z a-z 0-9 _ . -).
    pub id: String,
}

/// The bundle directory, absolute.
pub fn bundle_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    if dir.is_relative() {
        return Ok(std::env::current_dir()?.join(dir));
    }
    Ok(dir)
}

/// An absolute path for a file the caller names relative to its own directory.
pub fn absolute(path: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    Ok(match path {
        Some(p) if p.is_relative() => Some(std::env::current_dir()?.join(p)),
        other => other,
    })
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    let bundle = bundle_dir(args.bundle)?;
    let opts = CreateOptions {
        console_socket: absolute(args.console_socket)?,
        pid_file: absolute(args.pid_file)?,
        preserve_fds: args.preserve_fds,
    };
    sandbox_core::oci::create(root, &args.id, &bundle, crate::invoked_mode(), &opts)?;
    Ok(0)
}
