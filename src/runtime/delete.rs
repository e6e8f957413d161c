//! `delete`: removes a stopped container and every host object it had (its cgroup, its state);
//! with --force any container, killed first. A missing container is an error without --force.

use sandbox_core::Root;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kill the container first if it still runs; no error if it does not exist.
    #[arg(long, short = 'f')]
    pub force: bool,
    pub id: String,
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    sandbox_core::oci::delete(root, &args.id, args.force)?;
    Ok(0)
}
