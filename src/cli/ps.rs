//! `sandbox ps`: the sandboxes `sandbox run` is running now, in both modes — id, mode, image,
//! status, uptime, host memory, command.

use sandbox_core::{Mode, Root, State, Status};

const EXAMPLES: &str = "\
Examples:
  sandbox ps                       running sandboxes
  sandbox ps --all                 stopped ones too (left by a killed launcher until `sandbox gc`)
  sandbox ps --json                for machines

MEMORY is what the sandbox costs the host now: a container's cgroup memory use, a VM's VMM
process (resident guest memory included).";

/// List running sandboxes: id, mode, image, status, uptime, host memory, command.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Also list stopped sandboxes whose directories remain.
    #[arg(long, short)]
    all: bool,
    /// One JSON object per sandbox (id, mode, image, status, created, uptime_seconds,
    /// memory_bytes, command), as a JSON array.
    #[arg(long)]
    json: bool,
}

/// One row.
#[derive(Debug, serde::Serialize)]
struct Row {
    id: String,
    mode: String,
    image: String,
    status: String,
    created: String,
    uptime_seconds: Option<u64>,
    memory_bytes: Option<u64>,
    command: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let root = Root::run();
    let mut rows = Vec::new();
    for id in root.list() {
        let Ok(found) = sandbox_core::oci::find(&root, &id) else {
            continue;
        };
        if found.status == Status::Stopped && !args.all {
            continue;
        }
        rows.push(row(&found.state, found.status, found.dir.path()));
    }
    rows.sort_by(|a, b| a.created.cmp(&b.created));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<18} {:<9} {:<16} {:<8} {:>8} {:>10}  COMMAND",
        "ID", "MODE", "IMAGE", "STATUS", "UPTIME", "MEMORY"
    );
    for r in &rows {
        println!(
            "{:<18} {:<9} {:<16} {:<8} {:>8} {:>10}  {}",
            r.id,
            r.mode,
            r.image,
            r.status,
            r.uptime_seconds.map_or("-".into(), uptime),
            r.memory_bytes.map_or("-".into(), sandbox_spec::format_size),
            r.command.join(" ")
        );
    }
    Ok(0)
}

fn row(state: &State, status: Status, dir: &std::path::Path) -> Row {
    let command = std::fs::read_to_string(dir.join(sandbox_core::oci::PLAN_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<sandbox_protocol::Plan>(&t).ok())
        .map(|p| p.argv())
        .unwrap_or_default();
    let memory_bytes = match (status, state.mode) {
        (Status::Stopped, _) => None,
        (_, Mode::Container) => {
            sandbox_container::cgroups::Cgroup::open(&state.cgroup_dirs, &[])
                .stats()
                .memory_current_bytes
        }
        (_, Mode::Vm) => resident_bytes(state.pid),
    };
    Row {
        id: state.id.clone(),
        mode: state.mode.to_string(),
        image: state.bundle.clone(),
        status: status.to_string(),
        created: state.created.clone(),
        uptime_seconds: sandbox_image::time::seconds_since_rfc3339(&state.created),
        memory_bytes,
        command,
    }
}

/// A process's resident memory (VmRSS).
fn resident_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
