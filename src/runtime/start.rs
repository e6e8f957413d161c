//! `start`: releases a created container's process (after the prestart hooks; the poststart
//! hooks run once it runs).

use sandbox_core::Root;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub id: String,
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    sandbox_core::oci::start(root, &args.id)?;
    Ok(0)
}
