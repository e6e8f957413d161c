//! `ps`: a container's processes, host pids as a JSON array (--format json), or a table of
//! pids and command lines.

use sandbox_core::Root;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `table` or `json`.
    #[arg(long, short = 'f', default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    pub id: String,
    /// Accepted for runc compatibility (ps(1) options); the table shows PID and CMD.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    let pids = sandbox_core::oci::pids(root, &args.id)?;
    if args.format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(0);
    }
    println!("{:>8} CMD", "PID");
    for pid in pids {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        println!("{pid:>8} {cmd}");
    }
    Ok(0)
}
