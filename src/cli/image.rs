//! (being written).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Placeholder.
    Todo,
}
pub fn run(_cmd: Command) -> anyhow::Result<i32> {
    anyhow::bail!("not built yet")
}
