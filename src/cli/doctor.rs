//! `sandbox doctor`: checks this host for what each run mode needs and says how to fix what is
//! missing. One line per check (verdict, what was found, the fix), or JSON with `--json`. Exits
//! non-zero only when a check that both modes need fails.

mod cgroups;
mod kernel_features;
mod kvm;
mod namespaces;
mod report;
mod tools;

use report::Check;
use std::io::Write;

/// Check this host: KVM kind (hardware or PVM), cgroups, namespaces, overlayfs, tun, tools.
///
/// Each line reads `VERDICT NAME what-was-found [mode]`, followed by a `fix:` line when the
/// verdict is not ok. `[vm]`, `[container]`, `[lab]` and `[tests]` mark checks only that mode
/// needs; the exit status is 1 only when a check needed by both modes fails.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the checks as one JSON object (`{"checks": [...], "exit_status": N}`) for machines.
    #[arg(long)]
    pub json: bool,
}

/// Runs every check, in a fixed order.
pub fn checks() -> Vec<Check> {
    let mut all = vec![
        kvm::check(),
        cgroups::check(),
        namespaces::userns_check(),
        namespaces::root_check(),
        kernel_features::overlay_check(),
        kernel_features::tun_check(),
    ];
    all.extend(tools::checks());
    all
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let checks = checks();
    let status = report::exit_status(&checks);
    let text = if args.json {
        let out = serde_json::json!({ "checks": checks, "exit_status": status });
        serde_json::to_string_pretty(&out)?
    } else {
        checks.iter().map(Check::render).collect::<Vec<_>>().join("\n")
    };
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        // A reader that stopped early (`sandbox doctor | head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(status),
    }
}
