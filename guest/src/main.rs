//! `sandbox-guest`: PID 1 of every sandbox and the workload suite.
//!
//! `sandbox-guest init` (or PID 1 without a workload name: a kernel starting it as its init)
//! runs [`sandbox_guest::init`]; `sandbox-guest hold-kvm` is the lab's L1 helper
//! ([`sandbox_guest::hold_kvm`]); anything else is a workload from [`sandbox_guest::workloads`].

use sandbox_guest::{hold_kvm, init, workloads};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let first = args.first().map(String::as_str);
    let as_init = match first {
        Some("init") => true,
        // A kernel starts its init with whatever words of its command line it did not know,
        // so as PID 1 anything that is not a workload means "be init".
        _ => std::process::id() == 1 && !first.is_some_and(workloads::is_command),
    };
    let status = if first == Some("hold-kvm") {
        hold_kvm::main()
    } else if as_init {
        init::main()
    } else {
        workloads::main(&args)
    };
    std::process::exit(status);
}
