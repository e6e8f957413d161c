//! `sandbox bench`: run the scenarios in each mode and on each peer, write report.md,
//! report.json and SVG charts, print a summary table.

use anyhow::Context;
use sandbox_bench::{parse_list, Config, Mode, Peer, Scenario};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  sandbox bench --quick --modes container --out /tmp/bench
  sandbox bench --scenario boot,memory --peers crun,runc,runsc --runs 20
  sandbox bench --scenario density --modes container --density 200 --runs 3
  sandbox lab --tool crun --tool runc --tool runsc --tool qemu-system-x86_64 --include /usr/share/qemu:/usr/share/qemu \\
      --export /root/bench:./bench-lab -- bench --quick --out /root/bench      (VM mode on a PVM host)";

/// Measure both modes and the peers; write a report with charts.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Scenarios, comma-separated: boot,memory,density,disk,net,exec,cpu,syscall (default: all).
    #[arg(long, value_name = "LIST")]
    scenario: Option<String>,
    /// Modes, comma-separated: vm,container (default: both; VM mode needs hardware KVM or the lab).
    #[arg(long, value_name = "LIST")]
    modes: Option<String>,
    /// Peers, comma-separated: sandbox-runtime,crun,runc,runsc,qemu-microvm,qemu-microvm-default
    /// (default: all installed; `none` for none).
    #[arg(long, value_name = "LIST")]
    peers: Option<String>,
    /// Measured runs per scenario, mode and peer (default 10; 3 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: Option<u32>,
    /// 1 warm-up and 3 runs, small sizes, density of 2.
    #[arg(long)]
    quick: bool,
    /// Sandboxes started at once in the density scenario, in every mode (default 8 containers
    /// and 4 VMs; 2 with --quick), e.g. 200 containers natively, 16 VMs in the lab.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    density: Option<u32>,
    /// The image every sandbox and peer runs.
    #[arg(long, default_value = sandbox_spec::DEFAULT_IMAGE)]
    image: String,
    /// Where report.md, report.json and the charts go (created; must be empty or an old report).
    #[arg(long, value_name = "DIR", default_value = "bench-report")]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let bin = std::env::current_exe().context("finding the sandbox binary to launch sandboxes with")?;
    let mut config = Config::new(args.out, bin);
    if args.quick {
        config.make_quick();
    }
    if let Some(s) = args.scenario {
        config.scenarios = parse_list::<Scenario>(&s).map_err(|e| anyhow::anyhow!("--scenario: {e}"))?;
    }
    if let Some(m) = args.modes {
        config.modes = parse_list::<Mode>(&m).map_err(|e| anyhow::anyhow!("--modes: {e}"))?;
    }
    if let Some(p) = args.peers {
        config.peers = if p == "none" {
            Vec::new()
        } else {
            parse_list::<Peer>(&p).map_err(|e| anyhow::anyhow!("--peers: {e}"))?
        };
    }
    if let Some(n) = args.runs {
        config.runs = n as usize;
    }
    config.density = args.density.map(|n| n as usize);
    config.image = args.image;
    let out = config.out.clone();
    let report = sandbox_bench::run(config).context("writing the bench report")?;
    print!("{}", sandbox_bench::report::markdown::summary(&report));
    println!("report: {}", out.join("report.md").display());
    Ok(if report.failures.is_empty() { 0 } else { 1 })
}
