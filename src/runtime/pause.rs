//! `pause` and `resume`: freeze and thaw every process of a container (the cgroup freezer).

use sandbox_core::Root;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub id: String,
}

pub fn pause(root: &Root, args: Args) -> anyhow::Result<i32> {
    sandbox_core::oci::pause(root, &args.id)?;
    Ok(0)
}

pub fn resume(root: &Root, args: Args) -> anyhow::Result<i32> {
    sandbox_core::oci::resume(root, &args.id)?;
    Ok(0)
}
