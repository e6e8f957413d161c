//! `kill ID [SIGNAL]`: a signal (name or number, default TERM) to a container's process, or
//! with --all to every process in its cgroup.

use sandbox_core::Root;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Signal every process of the container, not only its first.
    #[arg(long, short = 'a')]
    pub all: bool,
    pub id: String,
    /// TERM, SIGKILL, 9, ...
    #[arg(default_value = "TERM")]
    pub signal: String,
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    let signal = crate::signal::parse(&args.signal)?;
    sandbox_core::oci::kill(root, &args.id, signal, args.all)?;
    Ok(0)
}
