//! `list`: the containers under --root, as a table or (--format json) as an array of OCI
//! states.

use sandbox_core::Root;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `table` or `json`.
    #[arg(long, short = 'f', default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Only the ids.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(root: &Root, args: Args) -> anyhow::Result<i32> {
    let mut states = Vec::new();
    for id in root.list() {
        // A directory being created or removed right now is not a container to list.
        if let Ok(found) = sandbox_core::oci::find(root, &id) {
            states.push(found.state.oci(found.status));
        }
    }
    if args.quiet {
        for s in &states {
            println!("{}", s["id"].as_str().unwrap_or(""));
        }
    } else if args.format == "json" {
        println!("{}", serde_json::to_string(&states)?);
    } else {
        println!(
            "{:<24} {:<8} {:<9} {:<40} CREATED",
            "ID", "PID", "STATUS", "BUNDLE"
        );
        for s in &states {
            println!(
                "{:<24} {:<8} {:<9} {:<40} {}",
                s["id"].as_str().unwrap_or(""),
                s["pid"],
                s["status"].as_str().unwrap_or(""),
                s["bundle"].as_str().unwrap_or(""),
                s["created"].as_str().unwrap_or("")
            );
        }
    }
    Ok(0)
}
