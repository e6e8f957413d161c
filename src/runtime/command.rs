//! Dispatching a parsed command line, with what every command shares: the root, and the
//! refusal of `--systemd-cgroup`.

use crate::log::Logger;
use crate::{Cli, Command};
use sandbox_core::Root;

/// Runs the command; returns the exit status.
pub fn dispatch(cli: Cli, log: &mut Logger) -> anyhow::Result<i32> {
    log.debug(&format!("{:?}", cli.command));
    if cli.systemd_cgroup {
        anyhow::bail!(
            "--systemd-cgroup: sandbox-runtime manages cgroups with cgroupfs paths only: set \
             cgroup_manager = \"cgroupfs\" in containers.conf (podman) or SystemdCgroup = false \
             in containerd's runc options"
        );
    }
    let root = Root::at(&cli.root);
    match cli.command {
        Command::Create(args) => crate::create::run(&root, args),
        Command::Start(args) => crate::start::run(&root, args),
        Command::State(args) => crate::state::run(&root, args),
        Command::Kill(args) => crate::kill::run(&root, args),
        Command::Delete(args) => crate::delete::run(&root, args),
        Command::Run(args) => crate::run::run(&root, args),
        Command::List(args) => crate::list::run(&root, args),
        Command::Exec(args) => crate::exec::run(&root, args),
        Command::Ps(args) => crate::ps::run(&root, args),
        Command::Events(args) => crate::events::run(&root, args),
        Command::Pause(args) => crate::pause::pause(&root, args),
        Command::Resume(args) => crate::pause::resume(&root, args),
        Command::Update(args) => crate::update::run(&root, args),
        Command::Features(args) => crate::features::run(args),
        Command::Spec(args) => crate::spec::run(args),
    }
}
