//! `sandbox lab [OPTIONS] -- ARGS`: runs `sandbox ARGS` inside the lab's L1 (QEMU TCG with a real,
//! nested KVM) and exits with its status; see the `sandbox-lab` crate.

use anyhow::Context;
use sandbox_lab::{Export, Include, LabError, LabOptions};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// L1 memory (it also holds the initramfs and whatever the command writes), e.g. 2G, 3072M.
    #[arg(long, default_value = "2G", value_name = "SIZE", value_parser = parse_memory)]
    memory: u32,
    /// L1 virtual CPUs.
    #[arg(long, default_value_t = 2, value_name = "N")]
    cpus: u32,
    /// QEMU's CPU model for L1: `max` exposes AMD SVM under TCG (`qemu64,-svm` shows the error
    /// when kvm_amd cannot load).
    #[arg(long, default_value = "max", value_name = "MODEL")]
    l1_cpu: String,
    /// Keep the run directory (QEMU command line, L1 console log, outputs) and print its path.
    #[arg(long)]
    keep: bool,
    /// Show the L1 console (kernel boot, module loading) on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Kill L1 when the command has not finished SECS seconds after QEMU started (L1 boot, a few
    /// seconds, included); exit status 124.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Place a host program in L1 at the same path, with its shared libraries: NAME on PATH
    /// (repeatable; e.g. the bench's peers crun, runc, hyperfine).
    #[arg(long = "tool", value_name = "NAME")]
    tools: Vec<String>,
    /// Place a host file or directory (recursively) in L1: HOST_PATH:L1_PATH (repeatable).
    #[arg(long = "include", value_name = "HOST:L1", value_parser = parse_include)]
    include: Vec<Include>,
    /// Ship the host's image store ($SANDBOX_HOME/images) into L1, for `run --image NAME`.
    #[arg(long)]
    images: bool,
    /// After the command, copy an L1 directory to the host: L1_DIR:HOST_DIR (e.g. a bench
    /// report directory; up to 4 GiB as a tar).
    #[arg(long, value_name = "L1_DIR:HOST_DIR", value_parser = parse_export)]
    export: Option<Export>,
    /// Set an environment variable for the command in L1: NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Give the command a terminal in L1 (its stdin, stdout and stderr), relayed to this one in
    /// raw mode: for interactive sessions, e.g. `sandbox lab --tty -- run --mode vm -it -- sh`.
    /// Stdin must be a terminal; the size is this terminal's at the start.
    #[arg(long, short = 't')]
    tty: bool,
    /// Only fetch the L1 kernel and build the initramfs (warms the cache), then print their paths.
    #[arg(long, conflicts_with = "args")]
    prepare: bool,
    /// The sandbox command line to run in L1 (after `--`), e.g. `-- run --mode vm -- true`.
    #[arg(last = true, value_name = "SANDBOX_ARGS", required_unless_present = "prepare")]
    args: Vec<OsString>,
}

fn parse_memory(s: &str) -> Result<u32, String> {
    let bytes = sandbox_spec::parse_size(s).map_err(|e| e.to_string())?;
    if bytes < 1 << 20 && s.bytes().all(|b| b.is_ascii_digit()) {
        // `--memory 4096` meant MiB, but a bare number is bytes.
        return Err(format!(
            "{s} is {bytes} bytes, less than a MiB: give a unit, e.g. {s}M or 4G"
        ));
    }
    u32::try_from(bytes >> 20).map_err(|_| format!("{s} is too large for L1"))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("bad timeout {s:?}: give a positive number of seconds")),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("bad --env {s:?}: give NAME=VALUE"))
}

fn parse_export(s: &str) -> Result<Export, String> {
    match s.split_once(':') {
        Some((l1, host)) if l1.starts_with('/') && !host.is_empty() => Ok(Export {
            l1_dir: l1.to_string(),
            host_dir: PathBuf::from(host),
        }),
        _ => Err(format!("bad --export {s:?}: give /ABSOLUTE/L1/DIR:HOST_DIR")),
    }
}

fn parse_include(s: &str) -> Result<Include, String> {
    match s.split_once(':') {
        Some((host, l1)) if !host.is_empty() && l1.starts_with('/') => Ok(Include {
            host: PathBuf::from(host),
            l1_path: l1.to_string(),
        }),
        _ => Err(format!("bad --include {s:?}: give HOST_PATH:/ABSOLUTE/L1/PATH")),
    }
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let mut opts = LabOptions {
        memory_mib: args.memory,
        cpus: args.cpus,
        cpu_model: args.l1_cpu,
        keep: args.keep,
        verbose: args.verbose,
        timeout: args.timeout,
        include: args.include,
        env: args.env,
        tools: args.tools,
        export: args.export,
        images: args.images,
        ..LabOptions::default()
    };
    if args.prepare {
        let prepared = sandbox_lab::prepare(&opts)?;
        println!(
            "kernel {} ({} {})",
            prepared.kernel.vmlinuz.display(),
            prepared.kernel.package,
            prepared.kernel.version
        );
        println!("initramfs {}", prepared.initramfs.display());
        return Ok(0);
    }
    sandbox_lab::install_interrupt_handler().context("cannot install the Ctrl-C handler")?;
    let terminal = if args.tty {
        Some(Relayed::start(&mut opts)?)
    } else {
        None
    };
    let result = if terminal.is_some() {
        sandbox_lab::run(&args.args, &opts)
    } else {
        // An oops or panic of L1's own kernel is a fault of the emulated host (it comes rarely,
        // under load): the command runs once more, after a line saying so. Not with --tty,
        // where a person is at the keyboard and can decide.
        // With SANDBOX_LAB_RETRY_STALLED (the project's tests set it) a run that reaches its
        // timeout is run again too.
        // With SANDBOX_LAB_RETRY_STALLED (the project's tests set it) a run that reaches its
        // timeout (the test default unless --timeout names one) is run again too.
        let stalled = sandbox_lab::retry_stalled_from_env();
        if stalled {
            opts = sandbox_lab::testing::with_test_timeout(&opts);
        }
        sandbox_lab::retrying_a_faulty_host(
            || sandbox_lab::run(&args.args, &opts),
            stalled,
            |why, tail| {
                let tail = if tail.trim().is_empty() {
                    String::new()
                } else {
                    format!(" L1 console tail:\n{tail}")
                };
                eprintln!(
                    "sandbox lab: L1 failed ({why}), a fault of the emulated host as far as the \
                     lab can tell; running the command again, once.{tail}"
                )
            },
        )
    };
    if let Some(t) = terminal {
        t.finish();
    }
    match result {
        Ok(ended) if ended.timed_out => {
            eprintln!(
                "sandbox lab: timed out: the command did not finish within {:.1} s; L1 (QEMU) was killed",
                opts.timeout.unwrap_or_default().as_secs_f64()
            );
            Ok(124)
        }
        Ok(ended) => match ended.export_error {
            Some(err) => {
                eprintln!("sandbox lab: {err}");
                Ok(if ended.status != 0 { ended.status } else { 1 })
            }
            None => Ok(ended.status),
        },
        Err(LabError::Interrupted) => {
            eprintln!("sandbox lab: interrupted; L1 (QEMU) was stopped");
            Ok(130)
        }
        Err(e) => Err(e.into()),
    }
}

/// `--tty`: a socket pair whose one end QEMU carries as L1's ttyS1, the other relayed to this
/// terminal (raw input; output processing kept for the lab's own progress lines).
struct Relayed {
    qemu_end: std::os::unix::net::UnixStream,
    session: sandbox_core::terminal::Session,
}

impl Relayed {
    fn start(opts: &mut LabOptions) -> anyhow::Result<Relayed> {
        use sandbox_core::terminal;
        use std::os::fd::{AsRawFd, OwnedFd};
        anyhow::ensure!(
            terminal::is_terminal(0),
            "--tty needs a terminal on stdin, and stdin is not one: run from a terminal, or drop --tty"
        );
        let (ours, qemu_end) =
            std::os::unix::net::UnixStream::pair().context("creating the terminal's socket pair")?;
        let (rows, cols) = terminal::host_size().unwrap_or((24, 80));
        opts.terminal = Some(sandbox_lab::Terminal {
            fd: qemu_end.as_raw_fd(),
            rows,
            cols,
        });
        let ours = OwnedFd::from(ours);
        let output = ours.try_clone().context("duplicating the terminal socket")?;
        let raw = terminal::RawMode::enter_keeping_output()
            .map_err(|e| anyhow::anyhow!("putting the terminal in raw mode: {e}"))?;
        let relay = terminal::relay(terminal::Ends {
            sandbox_in: ours,
            sandbox_out: Some(output),
            stdin: true,
            // L1's terminal keeps the size it started with.
            resize: Box::new(|_| {}),
        })
        .map_err(|e| anyhow::anyhow!("starting the terminal relay: {e}"))?;
        Ok(Relayed {
            qemu_end,
            session: terminal::Session {
                relay: Some(relay),
                raw,
            },
        })
    }

    /// Lets L1's last output through and restores this terminal.
    fn finish(self) {
        drop(self.qemu_end);
        self.session.finish();
    }
}
