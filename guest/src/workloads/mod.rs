//! The workload suite: small, self-timed benchmarks that run the same way natively, in a
//! container and in a VM. Each prints exactly one JSON line on stdout whose field names carry
//! their units; usage errors go to stderr with exit status 2, failures with status 1.

pub mod args;
pub mod cpu;
pub mod disk;
pub mod info;
pub mod mem;
pub mod net;
pub mod probe;
pub mod ready;
pub mod syscall;
pub mod vsock_echo;

use args::Flags;

/// Why a workload did not produce its result.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Bad or missing arguments, or an unknown workload: exit status 2, usage printed.
    #[error("{0}")]
    Usage(String),
    /// The workload started but could not finish: exit status 1.
    #[error("{0}")]
    Failed(String),
}

impl WorkloadError {
    /// The process exit status this error ends with.
    pub fn exit_status(&self) -> i32 {
        match self {
            WorkloadError::Usage(_) => 2,
            WorkloadError::Failed(_) => 1,
        }
    }
}

/// Every workload with its arguments, in the order the usage lists them.
pub const WORKLOADS: &[(&str, &str, &str)] = &[
    (
        "ready",
        "",
        "tell the host the workload has started (channel from SANDBOX_READY)",
    ),
    (
        "info",
        "",
        "describe the sandbox: kernel, namespaces, cgroup limits, mounts, cpus, memory, devices",
    ),
    ("cpu", "[--seconds S]", "integer mixing for S seconds (default 1)"),
    ("mem", "--mib N", "allocate N MiB and write every page"),
    (
        "disk",
        "--path DIR [--mib N]",
        "sequential write/read and 4 KiB random IOPS in DIR (default 64 MiB)",
    ),
    (
        "net serve",
        "--port P [--bind ADDR]",
        "TCP server for `net` (default bind 0.0.0.0)",
    ),
    (
        "net",
        "--addr HOST:PORT [--seconds S]",
        "TCP throughput and request/response latency (default 2 s)",
    ),
    (
        "syscall",
        "[--seconds S]",
        "getpid and 64-byte write rates (default 1 s)",
    ),
    (
        "vsock-echo",
        "--port P [--count N] | --connect-host P",
        "echo AF_VSOCK streams: serve N on port P, or connect to the host's port P",
    ),
    (
        "probe",
        "NAME [args]",
        "try one escape from inside and report whether it was allowed (probes below)",
    ),
];

/// Whether `name` is a command of this program other than `init` (used to tell a workload run
/// as PID 1 from a kernel's arguments to its init).
pub fn is_command(name: &str) -> bool {
    matches!(name, "--help" | "-h" | "help")
        || WORKLOADS
            .iter()
            .any(|(w, _, _)| w.split(' ').next() == Some(name))
}

/// The usage text listing every workload with its arguments.
pub fn usage() -> String {
    let mut text = String::from(
        "usage: sandbox-guest <workload> [args]   (each prints one JSON line on stdout)\n       \
         sandbox-guest init                  (PID 1: runs the Plan named by SANDBOX_PLAN or sandbox.plan=)\n       \
         sandbox-guest hold-kvm              (the lab's L1 helper: holds an idle KVM VM open until killed)\n\nworkloads:\n",
    );
    for (name, args, what) in WORKLOADS {
        let head = format!("{name} {args}");
        text.push_str(&format!("  {head:<42} {what}\n"));
    }
    text.push_str("\nprobes (`sandbox-guest probe NAME`):\n");
    for (name, args, what) in probe::PROBES {
        let head = format!("{name} {args}");
        text.push_str(&format!("  {head:<42} {what}\n"));
    }
    text
}

/// Runs the workload named by `args[0]` and returns the process exit status.
pub fn main(args: &[String]) -> i32 {
    let Some(name) = args.first() else {
        eprintln!("sandbox-guest: no workload given\n\n{}", usage());
        return 2;
    };
    if matches!(name.as_str(), "--help" | "-h" | "help") {
        print!("{}", usage());
        return 0;
    }
    let rest = &args[1..];
    let result = match name.as_str() {
        "ready" => Flags::parse(name, rest, &[]).and_then(|_| ready::run()),
        "info" => Flags::parse(name, rest, &[]).and_then(|_| info::run()),
        "cpu" => Flags::parse(name, rest, &["seconds"]).and_then(|f| cpu::run(&f)),
        "mem" => Flags::parse(name, rest, &["mib"]).and_then(|f| mem::run(&f)),
        "disk" => Flags::parse(name, rest, &["path", "mib"]).and_then(|f| disk::run(&f)),
        "net" if rest.first().map(String::as_str) == Some("serve") => {
            Flags::parse("net serve", &rest[1..], &["port", "bind"]).and_then(|f| net::serve(&f))
        }
        "net" => Flags::parse(name, rest, &["addr", "seconds"]).and_then(|f| net::client(&f)),
        "syscall" => Flags::parse(name, rest, &["seconds"]).and_then(|f| syscall::run(&f)),
        "vsock-echo" => {
            Flags::parse(name, rest, &["port", "count", "connect-host"]).and_then(|f| vsock_echo::run(&f))
        }
        "probe" => probe::run(rest),
        other => Err(WorkloadError::Usage(format!("unknown workload {other:?}"))),
    };
    match result.and_then(|value| args::emit(&value)) {
        Ok(()) => 0,
        Err(e @ WorkloadError::Usage(_)) => {
            eprintln!("sandbox-guest: {e}\n\n{}", usage());
            e.exit_status()
        }
        Err(e) => {
            eprintln!("sandbox-guest {name}: {e}");
            e.exit_status()
        }
    }
}
