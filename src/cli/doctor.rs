//! `sandbox doctor` (being written).
#[derive(Debug, clap::Args)]
pub struct Args {}
pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("not built yet")
}
