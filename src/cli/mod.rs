//! The command line: one file per subcommand, each a thin layer over the library crates.

mod bench;
mod disk;
mod doctor;
mod exec;
mod explain;
mod gc;
mod image;
mod kernel;
mod lab;
mod ps;
mod run;

use clap::{Parser, Subcommand};

/// Run the same workload in a tiny KVM microVM and in a namespace container, and measure the
/// difference.
#[derive(Debug, Parser)]
#[command(name = "sandbox", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure both modes and the peers (crun, runc, QEMU microvm); write report.md, report.json
    /// and SVG charts.
    Bench(bench::Args),
    /// Check this host: KVM kind (hardware or PVM), cgroups, namespaces, overlayfs, tun, tools.
    Doctor(doctor::Args),
    /// Run another command in a running sandbox: `sandbox exec ID -- CMD` (a container's
    /// namespaces, or a VM's guest agent over vsock).
    Exec(exec::Args),
    /// Run the default workload with --trace in a VM, a container, or both, and explain what each
    /// set up and what the host sees.
    Explain(explain::Args),
    /// Remove what sandboxes whose launcher died left behind: run directories, cgroups, veths.
    Gc(gc::Args),
    /// Build and copy ext4 disks: cached root disks, per-VM writable copies, volume images.
    #[command(subcommand)]
    Disk(disk::Command),
    /// Manage the image store (OCI layout under $SANDBOX_HOME/images).
    #[command(subcommand)]
    Image(image::Command),
    /// Build or locate the guest kernel (from Debian's linux-source-6.1, cached by content).
    #[command(subcommand)]
    Kernel(kernel::Command),
    /// Run `sandbox ARGS` inside the lab: an L1 Linux under QEMU TCG with a real (nested) KVM,
    /// for hosts whose own KVM is PVM or absent.
    Lab(lab::Args),
    /// List running sandboxes: id, mode, image, status, uptime, host memory, command.
    Ps(ps::Args),
    /// Run a command in a container or a microVM: `sandbox run --mode container -- CMD ARGS`.
    Run(run::Args),
}

/// Runs the parsed command; returns the process exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Disk(cmd) => disk::run(cmd),
        Command::Doctor(args) => doctor::run(args),
        Command::Exec(args) => exec::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Image(cmd) => image::run(cmd),
        Command::Kernel(cmd) => kernel::run(cmd),
        Command::Lab(args) => lab::run(args),
        Command::Ps(args) => ps::run(args),
        Command::Run(args) => run::run(args),
    }
}
