//! `sandbox`: run the same workload in a KVM microVM and in a namespace container, and measure
//! the difference. This file only parses the command line; each subcommand lives in `cli/`.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // One line with the cause chain; remedies are part of the messages themselves.
            eprintln!("sandbox: {err:#}");
            std::process::exit(1);
        }
    }
}
