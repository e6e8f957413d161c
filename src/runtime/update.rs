//! `update`: new limits for a running container, from a LinuxResources JSON (--resources FILE,
//! or - for stdin, as containerd sends it) and/or flags.

use sandbox_core::Root;
use std::io::Read;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A LinuxResources JSON file, or - for stdin.
    #[arg(long, short = 'r', value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes.
    #[arg(long, short = 'm')]
    pub memory: Option<i64>,
    /// CFS quota in microseconds per period (-1: none).
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Most processes (-1: none).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    pub id: String,
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    let mut resources = match &args.resources {
        Some(p) if p.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            sandbox_core::plan::parse_resources(&text)?
        }
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read --resources {}: {e}", p.display()))?;
            sandbox_core::plan::parse_resources(&text)?
        }
        None => Default::default(),
    };
    if let Some(m) = args.memory {
        resources.memory.limit = Some(m);
    }
    resources.cpu.quota = args.cpu_quota.or(resources.cpu.quota);
    resources.cpu.period = args.cpu_period.or(resources.cpu.period);
    resources.cpu.shares = args.cpu_shares.or(resources.cpu.shares);
    resources.cpu.cpus = args.cpuset_cpus.or(resources.cpu.cpus);
    resources.cpu.mems = args.cpuset_mems.or(resources.cpu.mems);
    resources.pids = args.pids_limit.or(resources.pids);
    sandbox_core::oci::update(root, &args.id, &resources)?;
    Ok(0)
}
