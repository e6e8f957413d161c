//! `sandbox run`: parse the flags both modes share into a `SandboxSpec`, resolve the image, run
//! it (container mode: `sandbox_container::run`), and exit with the workload's status.

use anyhow::Context;
use sandbox_image::{ResolvedImage, Store};
use sandbox_spec::{parse_size, NetMode, Resources, SandboxSpec, Volume, DEFAULT_IMAGE};

const EXAMPLES: &str = "\
Examples:
  sandbox run --mode container                              the guest program's `info`
  sandbox run --mode container -- sh -c 'echo hello'
  sandbox run --mode container --memory 64M -- sandbox-guest mem --mib 128   (OOM-killed: 137)
  sandbox run --mode container --cpus 0.5 --pids 32 -- sandbox-guest cpu
  sandbox run --mode container --net host -- ip route          eth0 on a private /30; the host is the gateway
  sandbox run --mode container --volume /srv/data:/data:ro --workdir /data -- ls
  sandbox run --mode container --timings -- sandbox-guest ready";

/// Which sandbox to run the command in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Linux namespaces, cgroups, overlayfs (sandbox-guest init as PID 1).
    Container,
    /// A KVM microVM.
    Vm,
}

/// Run a command in a sandbox.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Which kind of sandbox.
    #[arg(long, value_enum, default_value = "container")]
    mode: Mode,
    /// Image from the store (`sandbox image ls`); the default image is busybox + sandbox-guest.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Memory limit, e.g. 64M, 1G, 512MiB (the workload is OOM-killed above it).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    memory: Option<u64>,
    /// CPU quota in CPUs, e.g. 0.5.
    #[arg(long, value_parser = Resources::parse_cpus, value_name = "N")]
    cpus: Option<f64>,
    /// Most processes and threads at once.
    #[arg(long, value_parser = Resources::parse_pids, value_name = "N")]
    pids: Option<u64>,
    /// Hostname inside the sandbox (default: sbx-<id>).
    #[arg(long, value_parser = SandboxSpec::parse_hostname, value_name = "H")]
    hostname: Option<String>,
    /// Network: `none` (loopback only) or `host` (a private /30 link to the host).
    #[arg(long, default_value = "none", value_parser = clap::value_parser!(NetMode), value_name = "none|host")]
    net: NetMode,
    /// Bind-mount a host directory: HOST:PATH or HOST:PATH:ro (repeatable).
    #[arg(long = "volume", short = 'v', value_parser = clap::value_parser!(Volume), value_name = "HOST:PATH[:ro]")]
    volumes: Vec<Volume>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = SandboxSpec::parse_env, value_name = "K=V")]
    env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(long, value_parser = SandboxSpec::parse_workdir, value_name = "DIR")]
    workdir: Option<String>,
    /// Run the command as UID[:GID].
    #[arg(long, value_parser = SandboxSpec::parse_user, value_name = "UID[:GID]")]
    user: Option<(u32, u32)>,
    /// Print the time of each phase (µs since the launcher started) to stderr.
    #[arg(long)]
    timings: bool,
    /// Print each launcher step as it happens, to stderr.
    #[arg(long)]
    trace: bool,
    /// Write the outcome (exit status, phase timings, cgroup figures) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    outcome: Option<std::path::PathBuf>,
    /// The command and its arguments (after `--`); none runs `sandbox-guest info`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn spec_from(args: Args) -> anyhow::Result<SandboxSpec> {
    let mut spec = SandboxSpec {
        image: args.image,
        command: args.command,
        resources: Resources {
            memory_bytes: args.memory,
            cpus: args.cpus,
            pids: args.pids,
        },
        net: args.net,
        volumes: args.volumes,
        hostname: args.hostname,
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        timings: args.timings,
        trace: args.trace,
    };
    spec.validate()?;
    Ok(spec)
}

/// The image store's answer in the launcher's terms.
fn container_image(resolved: ResolvedImage, spec: &SandboxSpec) -> anyhow::Result<sandbox_container::Image> {
    let env = resolved
        .config
        .env
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let user = match (&spec.user, &resolved.config.user) {
        (Some(_), _) | (None, None) => None,
        (None, Some(u)) if u.is_empty() => None,
        (None, Some(u)) => Some(SandboxSpec::parse_user(u).with_context(|| {
            format!(
                "image {:?} names its user {u:?}, which sandbox cannot look up: pass --user UID:GID",
                resolved.name
            )
        })?),
    };
    Ok(sandbox_container::Image {
        name: resolved.name,
        layers: resolved.layers,
        env,
        entrypoint: resolved.config.entrypoint,
        working_dir: resolved.config.working_dir,
        user,
    })
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let started = sandbox_container::now_ns();
    let mode = args.mode;
    let outcome_file = args.outcome.clone();
    let spec = spec_from(args)?;
    if mode == Mode::Vm {
        anyhow::bail!("--mode vm is not available in this build yet: use --mode container");
    }
    if let Err(e) = sandbox_container::check_host(&spec) {
        eprintln!("sandbox: {e}");
        return Ok(e.exit_status());
    }
    let store = Store::open_default().context("opening the image store")?;
    let resolved = store.resolve(&spec.image)?;
    let image = container_image(resolved, &spec)?;
    let outcome = match sandbox_container::run_from(&spec, &image, started) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("sandbox: {e}");
            return Ok(e.exit_status());
        }
    };
    if let Some(message) = &outcome.message {
        eprintln!("sandbox: {message}");
    }
    if spec.timings {
        eprint!("{}", outcome.timings_report());
    }
    if let Some(path) = outcome_file {
        let json = serde_json::to_string_pretty(&outcome)?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("writing the outcome to {}", path.display()))?;
    }
    Ok(outcome.exit_status)
}
