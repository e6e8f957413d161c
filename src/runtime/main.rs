//! `sandbox-runtime`: sandbox's containers behind the OCI runtime command line that runc defined,
//! so podman (`--runtime`), containerd (`BinaryName`), Docker (`runtimes`) and from there
//! Kubernetes (`RuntimeClass`) can run them. One file per command; each is a thin layer over the
//! runtime core's OCI lifecycle (`sandbox_core::oci`).

mod command;
mod create;
mod delete;
mod events;
mod exec;
mod features;
mod kill;
mod list;
mod log;
mod pause;
mod ps;
mod run;
mod signal;
mod spec;
mod start;
mod state;
mod update;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

const ABOUT: &str = "\
Run OCI bundles as sandbox containers, with runc's command line: a container is created (its
process set up and waiting), started, signalled, and deleted, each by a separate command that
finds it by id under --root.";

const AFTER: &str = "\
Register it with the tools you already run (docs/oci.md has each recipe):
  podman --runtime /usr/local/bin/sandbox-runtime run --rm IMAGE CMD
  ctr run --rm --runc-binary /usr/local/bin/sandbox-runtime IMAGE ID CMD
  containerd config.toml: runtime_type = \"io.containerd.runc.v2\", options.BinaryName
By hand:
  sandbox-runtime spec --bundle B        write a config.json to start from
  sandbox-runtime create --bundle B ID   then: start ID, state ID, kill ID TERM, delete ID
  sandbox-runtime run --bundle B ID      create + start + wait, exits with the process's status";

/// The OCI runtime command line.
#[derive(Debug, Parser)]
#[command(name = "sandbox-runtime", version = version(), about = ABOUT, after_help = AFTER)]
pub struct Cli {
    /// Where container state lives (one directory per container, 0700).
    #[arg(
        long,
        global = true,
        default_value = "/run/sandbox-runtime",
        value_name = "DIR"
    )]
    pub root: PathBuf,
    /// Also write messages (errors always) to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// How --log lines look: `text`, or `json` ({"level":..,"msg":..,"time":..}, what containerd reads).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log every command and its outcome, not only errors.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Ask for systemd-managed cgroups (refused: sandbox-runtime manages cgroupfs paths).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    #[command(subcommand)]
    pub command: Command,
}

fn version() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        "\nspec: 1.1.0\ncgroups: v1, v2, hybrid (cgroupfs)"
    )
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container from a bundle: set up, its process waiting for `start`.
    Create(create::Args),
    /// Start a created container's process.
    Start(start::Args),
    /// Print a container's OCI state as JSON.
    State(state::Args),
    /// Send a signal to a container's process (default TERM).
    Kill(kill::Args),
    /// Remove a stopped container (with --force, any container).
    Delete(delete::Args),
    /// Create and start a container, wait for it, and exit with its process's status.
    Run(run::Args),
    /// List the containers under --root.
    List(list::Args),
    /// Run another process in a running container.
    Exec(exec::Args),
    /// List the processes of a container.
    Ps(ps::Args),
    /// Print a container's resource figures (--stats: once).
    Events(events::Args),
    /// Freeze every process of a container.
    Pause(pause::Args),
    /// Thaw a paused container.
    Resume(pause::Args),
    /// Change a running container's limits (memory, cpu, pids).
    Update(update::Args),
    /// Print what this runtime supports, as OCI features JSON.
    Features(features::Args),
    /// Write a config.json to start a bundle from.
    Spec(spec::Args),
}

/// The name that runs VM mode (a link to this binary, made by `scripts/setup`).
pub const VM_NAME: &str = "sandbox-runtime-vm";

/// The mode a bundle without the `org.sandbox.mode` annotation runs in: VM mode when this
/// binary was invoked as [`VM_NAME`], else container mode.
pub fn invoked_mode() -> sandbox_core::Mode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    match std::path::Path::new(&argv0).file_name() {
        Some(name) if name == VM_NAME => sandbox_core::Mode::Vm,
        _ => sandbox_core::Mode::Container,
    }
}

fn main() {
    let cli = Cli::parse();
    let mut logger = log::Logger::new(cli.log.clone(), cli.log_format == "json", cli.debug);
    let code = match command::dispatch(cli, &mut logger) {
        Ok(code) => code,
        Err(err) => {
            let text = format!("{err:#}");
            logger.error(&text);
            eprintln!("sandbox-runtime: {text}");
            1
        }
    };
    std::process::exit(code);
}
