//! `state`: the OCI state of a container (ociVersion, id, status, pid, bundle, annotations,
//! plus runc's rootfs, created and owner), as indented JSON.

use sandbox_core::Root;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub id: String,
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    let found = sandbox_core::oci::find(root, &args.id)?;
    print!(
        "{}",
        serde_json::to_string_pretty(&found.state.oci(found.status))?
    );
    Ok(0)
}
