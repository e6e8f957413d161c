//! `sandbox run`: parse the flags both modes share into a `SandboxSpec`, resolve the image, and
//! hand both to the runtime core (`sandbox_core::run_spec`: create, start, wait, delete through
//! the container or VM backend); exit with the workload's status.

use anyhow::Context;
use sandbox_image::Store;
use sandbox_spec::{parse_size, IdRange, NetMode, Resources, SandboxSpec, Volume, DEFAULT_IMAGE};

const EXAMPLES: &str = "\
Examples:
  sandbox run --mode container                              the guest program's `info`
  sandbox run --mode container -- sh -c 'echo hello'
  sandbox run --mode container --memory 64M -- sandbox-guest mem --mib 128   (OOM-killed: 137)
  sandbox run --mode container --cpus 0.5 --pids 32 -- sandbox-guest cpu
  sandbox run --mode container --net host -- ip route          eth0 on a private /30; the host is the gateway
  sandbox run --mode container --volume /srv/data:/data:ro --workdir /data -- ls
  sandbox run --mode container --timings -- sandbox-guest ready
  sandbox run --userns -- id                               root inside, host uid 1000000 outside
  sandbox run -it -- sh                                     an interactive shell (exit or Ctrl-D ends it)
  echo hi | sandbox run -i -- cat                           stdin reaches the command only with -i
  sandbox run --mode vm                                    `info` inside a microVM
  sandbox run --mode vm --cpus 2 --memory 256M -- nproc
  sandbox run --mode vm --net host -- ip addr              a tap on a private /30
  sandbox run --mode vm --volume ./data:/data -- ls /data  a directory, copied to an ext4 disk
  sandbox run --mode vm --volume disk.ext4:/data -- ls     an ext4 image file, attached as is
  sandbox run --mode vm --keep-disk -- touch /f            keeps the per-VM root disk
  sandbox lab -- run --mode vm                             where KVM is PVM or missing

VM mode boots the guest kernel built by `sandbox kernel build` (run it once; it is not built on
first use) or the one given with --kernel. The guest console (the command's stdout and stderr)
goes to stdout. On a PVM host (kvm_pvm) a standard kernel cannot run: use `sandbox lab`, or pass
a PVM-enabled kernel with --kernel.";

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
    /// Bind-mount a host directory: HOST:PATH or HOST:PATH:ro (repeatable). VM mode: a directory
    /// becomes an ext4 disk image (a copy: writes stay in the VM), an ext4 image file is attached.
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
    /// The sandbox's id, for `sandbox exec` and `sandbox ps` (1-64 of A-Z a-z 0-9 _ . -);
    /// default: a random one, shown by `sandbox ps`.
    #[arg(long, value_name = "ID")]
    name: Option<String>,
    /// Give the command a terminal of its own (its controlling terminal, window size followed);
    /// this terminal is relayed to it. With -i, an interactive session: `sandbox run -it -- sh`.
    #[arg(long, short = 't')]
    tty: bool,
    /// Keep stdin open for the command (without it the command reads /dev/null). With -t,
    /// this terminal goes into raw mode until the command ends.
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Container mode, as root: a user namespace of its own, its root (and ids up to 65535)
    /// mapped onto unprivileged host ids from BASE, so what escapes the container is no host
    /// root. Without =BASE: the `sandbox` line of /etc/subuid and /etc/subgid, else 1000000.
    /// The image's layers are copied once per range with their owners shifted, kept under
    /// $SANDBOX_HOME/layers/userns/ for later runs, and removed with the image (`sandbox image
    /// rm`). Volumes keep their host owners: files of ids outside the range are nobody's inside.
    #[arg(
        long,
        value_name = "BASE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "auto",
        value_parser = IdRange::parse
    )]
    userns: Option<IdRange>,
    /// Print the time of each phase (µs since the launcher started) to stderr.
    #[arg(long)]
    timings: bool,
    /// Print each launcher step as it happens, to stderr.
    #[arg(long)]
    trace: bool,
    /// Write the outcome (exit status, phase timings, cgroup figures) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    outcome: Option<std::path::PathBuf>,
    /// VM mode: the kernel to boot, a bzImage or ELF vmlinux (default: the one `sandbox kernel
    /// build` made). Given, it is also tried on a PVM host.
    #[arg(long, value_name = "PATH")]
    kernel: Option<std::path::PathBuf>,
    /// VM mode: extra kernel command-line parameters, after sandbox's own (so they win).
    #[arg(long, value_name = "PARAMS", allow_hyphen_values = true)]
    cmdline_extra: Option<String>,
    /// VM mode: keep the per-VM root disk after the VM ends, and print its path to stderr.
    #[arg(long)]
    keep_disk: bool,
    /// The command and its arguments (after `--`); none runs `sandbox-guest info`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn spec_from(args: Args, mode: Mode) -> anyhow::Result<SandboxSpec> {
    let mut volumes = args.volumes;
    // VM mode also takes disk image files as volumes; the spec's check wants directories.
    let mut files = Vec::new();
    if mode == Mode::Vm {
        let (f, dirs): (Vec<Volume>, Vec<Volume>) = volumes.into_iter().partition(|v| v.host.is_file());
        volumes = dirs;
        for mut v in f {
            v.host = v
                .host
                .canonicalize()
                .with_context(|| format!("volume {}", v.host.display()))?;
            files.push(v);
        }
    }
    let mut spec = SandboxSpec {
        image: args.image,
        command: args.command,
        resources: Resources {
            memory_bytes: args.memory,
            cpus: args.cpus,
            pids: args.pids,
        },
        net: args.net,
        volumes,
        hostname: args.hostname,
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        timings: args.timings,
        trace: args.trace,
        tty: args.tty,
        interactive: args.interactive,
        userns: args.userns,
        name: args.name,
    };
    spec.validate()?;
    spec.volumes.extend(files);
    Ok(spec)
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let started = sandbox_core::trace::now_ns();
    let started_instant = std::time::Instant::now();
    let mode = args.mode;
    let outcome_file = args.outcome.clone();
    if mode == Mode::Container {
        for (given, flag) in [
            (args.kernel.is_some(), "--kernel"),
            (args.cmdline_extra.is_some(), "--cmdline-extra"),
            (args.keep_disk, "--keep-disk"),
        ] {
            anyhow::ensure!(!given, "{flag} is for VM mode: add --mode vm, or drop {flag}");
        }
    }
    let vm_opts = sandbox_core::vm::VmOptions {
        kernel: args.kernel.clone(),
        cmdline_extra: args.cmdline_extra.clone().unwrap_or_default(),
        keep_disk: args.keep_disk,
        trace: args.trace,
        started: started_instant,
        ..sandbox_core::vm::VmOptions::new()
    };
    if args.tty && args.interactive {
        anyhow::ensure!(
            sandbox_core::terminal::is_terminal(0),
            "-t with -i needs a terminal on stdin, and stdin is not one: drop -t to pipe input, \
             or run from a terminal"
        );
    }
    let spec = spec_from(args, mode)?;
    let core_mode = match mode {
        Mode::Container => sandbox_core::Mode::Container,
        Mode::Vm => sandbox_core::Mode::Vm,
    };
    // Refuse what can be refused before the image store does any work.
    if let Err(e) = sandbox_core::check_host(core_mode, &spec, &vm_opts) {
        eprintln!("sandbox: {e}");
        return Ok(e.exit_status());
    }
    let store = Store::open_default().context("opening the image store")?;
    let resolved = store.resolve(&spec.image)?;
    let run = match sandbox_core::run_spec(&spec, &resolved, core_mode, vm_opts, started) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("sandbox: {e}");
            return Ok(e.exit_status());
        }
    };
    if let Some(message) = &run.outcome.message {
        eprintln!("sandbox: {message}");
    }
    if let Some(disk) = run.vm.as_ref().and_then(|v| v.kept_disk.as_ref()) {
        eprintln!("sandbox: kept the VM's root disk: {}", disk.display());
    }
    if spec.timings {
        match &run.vm {
            Some(vm) => eprint!("{}", vm.timings_report()),
            None => eprint!("{}", run.outcome.timings_report()),
        }
    }
    write_outcome(&run.outcome, outcome_file.as_deref())?;
    Ok(run.outcome.exit_status)
}

fn write_outcome(outcome: &sandbox_spec::Outcome, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(path) = path {
        let json = serde_json::to_string_pretty(outcome)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the outcome to {}", path.display()))?;
    }
    Ok(())
}
