//! The lab: runs `sandbox` inside an L1 Linux under QEMU's TCG emulator (`-cpu max`, so AMD SVM),
//! where `kvm_amd` gives VM mode a KVM with hardware-virtualization semantics — for hosts whose
//! own KVM is PVM or absent.
//!
//! - [`run`]: `sandbox lab -- ARGS`: fetch/cache the L1 kernel ([`l1kernel`]), build/cache the
//!   initramfs ([`payload`], [`initramfs`]), boot L1 ([`qemu`]), stream the output, return the
//!   command's exit status.
//! - [`run_sandbox`]: for end-to-end tests: runs `sandbox ARGS` natively where the host has
//!   hardware KVM and through the lab otherwise, and says which ([`Environment`]).
//! - [`testing::delegate`]: for tests needing hardware KVM: runs the test's body here, or runs
//!   the same test binary, filtered to that test, inside L1.
//! - [`HostKvm`]: what kind of KVM this host has (for `sandbox doctor` and `run --mode vm`).
//!
//! Cache layout under `<sandbox cache>/lab/`: `kernel-<package>_<version>/` (the L1 kernel and
//! its module tree), `initramfs-<content hash>.cpio` (uncompressed), and `*.lock` files.
//! Inside L1, `$SANDBOX_HOME` and `$SANDBOX_CACHE` are directories of the initramfs (RAM): root
//! disks and images are built there on demand with the shipped busybox and `mkfs.ext4`, and
//! cached artifacts (such as a built guest kernel) are shipped with [`LabOptions::include`].

mod cpio;
mod error;
pub mod guest_kernel;
mod hostkvm;
pub mod init_script;
pub mod initramfs;
mod interrupt;
pub mod l1kernel;
mod lock;
pub mod modules;
pub mod payload;
mod progress;
pub mod qemu;
pub mod testing;
mod tools;

pub use error::LabError;
pub use hostkvm::HostKvm;
pub use interrupt::{install_interrupt_handler, interrupted};
pub use l1kernel::L1Kernel;
pub use payload::Include;
pub use progress::Progress;
pub use qemu::{Ended, Export, EXPORT_DISK_BYTES};

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the `sandbox` binary to run in L1 (default: the running
/// executable when it is `sandbox`, else the one next to it or one level up).
pub const SANDBOX_BIN_ENV: &str = "SANDBOX_BIN";
/// Host environment variables passed on to the command in L1.
pub const PASSED_ENV: &[&str] = &["RUST_BACKTRACE", "RUST_LOG"];

/// How the lab runs.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// L1 memory in MiB (it also holds the initramfs and everything the command writes).
    pub memory_mib: u32,
    /// L1 virtual CPUs (QEMU runs one host thread per vCPU under multi-threaded TCG).
    pub cpus: u32,
    /// QEMU's `-cpu` model for L1 (default `max`, which exposes AMD SVM under TCG; `qemu64,-svm`
    /// shows what happens when kvm_amd cannot load).
    pub cpu_model: String,
    /// Ship the host's image store (`$SANDBOX_HOME/images`) into L1's `$SANDBOX_HOME`.
    pub images: bool,
    /// Ship the host's built guest kernel (`sandbox_kernel::cached()`) into L1's cache.
    pub guest_kernel: bool,
    /// Keep the run directory (QEMU command line, console log, outputs) and say where.
    pub keep: bool,
    /// Show the L1 console (boot messages, module loading) on stderr.
    pub verbose: bool,
    /// Kill L1 when the command has not finished this long after QEMU started (L1 boot included,
    /// a few seconds); status 124.
    pub timeout: Option<Duration>,
    /// Progress lines on stderr.
    pub progress: bool,
    /// The `sandbox` binary to run (see [`SANDBOX_BIN_ENV`]).
    pub sandbox_bin: Option<PathBuf>,
    /// The lab cache (default `<sandbox cache>/lab`).
    pub cache_dir: PathBuf,
    /// Extra host files or directories (recursively) to place in L1.
    pub include: Vec<Include>,
    /// Host programs (names on PATH) to place in L1 at the same paths, with their shared
    /// libraries — e.g. the bench's peers `crun`, `runc`, `hyperfine`.
    pub tools: Vec<String>,
    /// After the command, copy this L1 directory to this host directory (created if missing;
    /// files in it are overwritten). It travels as a tar on a virtio disk of [`EXPORT_DISK_BYTES`].
    pub export: Option<Export>,
    /// Environment for the command in L1 (besides [`PASSED_ENV`], taken from ours when set).
    pub env: Vec<(String, String)>,
    /// Give the command a terminal in L1 (`sandbox lab --tty`): see [`Terminal`].
    pub terminal: Option<Terminal>,
}

/// A terminal for the command in L1: L1's second serial port, in the usual cooked mode and this
/// size, becomes the command's stdin, stdout, stderr and controlling terminal, and QEMU carries
/// it over `fd`, one end of a connected socket pair (the caller relays the other end to its own
/// terminal). The descriptor must stay open until the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    pub fd: std::os::fd::RawFd,
    pub rows: u16,
    pub cols: u16,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            memory_mib: 2048,
            cpus: 2,
            cpu_model: "max".into(),
            guest_kernel: true,
            images: false,
            keep: false,
            verbose: false,
            timeout: None,
            progress: true,
            sandbox_bin: None,
            cache_dir: sandbox_protocol::paths::sandbox_cache().join("lab"),
            include: Vec::new(),
            tools: Vec::new(),
            env: Vec::new(),
            export: None,
            terminal: None,
        }
    }
}

/// The `sandbox` binary to put in L1 (or to run natively).
pub fn sandbox_binary(opts: &LabOptions) -> Result<PathBuf, LabError> {
    if let Some(p) = &opts.sandbox_bin {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os(SANDBOX_BIN_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(LabError::BinaryNotFound(format!(
                "{SANDBOX_BIN_ENV}={} is not a file: point it at a built sandbox",
                p.display()
            )))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| LabError::BinaryNotFound(format!("cannot find the running executable: {e}")))?;
    if exe.file_name() == Some(OsStr::new("sandbox")) {
        return Ok(exe);
    }
    let dir = exe.parent().unwrap_or(Path::new("/"));
    [dir.join("sandbox"), dir.join("../sandbox")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            LabError::BinaryNotFound(format!(
                "sandbox not found next to {}: build it with `cargo build` or set {SANDBOX_BIN_ENV}",
                exe.display()
            ))
        })
}

/// The L1 kernel and initramfs for `opts`, fetched and built as needed.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub kernel: L1Kernel,
    pub initramfs: PathBuf,
}

/// Fetches the L1 kernel and builds the initramfs unless cached.
pub fn prepare(opts: &LabOptions) -> Result<Prepared, LabError> {
    validate(opts)?;
    // QEMU first: no point downloading a kernel nothing can boot.
    qemu::qemu_binary()?;
    let progress = Progress::new(opts.progress);
    let kernel = l1kernel::ensure(&opts.cache_dir, &progress)?;
    let sandbox = sandbox_binary(opts)?;
    let guest = sandbox_protocol::paths::guest_binary().map_err(LabError::BinaryNotFound)?;
    let mut extras = payload::Extras {
        include: opts.include.clone(),
        ..Default::default()
    };
    if opts.guest_kernel {
        let k = guest_kernel::guest_kernel();
        extras.include.extend(k.files);
        extras.generated.extend(k.generated);
    }
    if opts.images {
        extras.include.extend(payload::image_store()?);
    }
    for tool in &opts.tools {
        extras.tools.push(tools::find_on_path(tool).ok_or_else(|| {
            LabError::BinaryNotFound(format!(
                "--tool {tool}: no such program on PATH (install its package)"
            ))
        })?);
    }
    let tree = payload::tree(&kernel, &sandbox, &guest, &extras)?;
    let initramfs = tree.build(&opts.cache_dir, &progress)?;
    Ok(Prepared { kernel, initramfs })
}

fn validate(opts: &LabOptions) -> Result<(), LabError> {
    for (k, _) in &opts.env {
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(LabError::BadOption(format!(
                "environment name {k:?}: use letters, digits and _ (not starting with a digit)"
            )));
        }
    }
    if !(256..=65536).contains(&opts.memory_mib) {
        return Err(LabError::BadOption(format!(
            "memory {} MiB: give 256 MiB to 64 GiB (L1 holds the initramfs in RAM)",
            opts.memory_mib
        )));
    }
    if !(1..=64).contains(&opts.cpus) {
        return Err(LabError::BadOption(format!("cpus {}: give 1 to 64", opts.cpus)));
    }
    Ok(())
}

/// Whether `sandbox ARGS` asks for VM mode without naming its own kernel.
fn wants_built_guest_kernel(args: &[&OsStr]) -> bool {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let end = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let own = &args[..end];
    let vm = own.windows(2).any(|w| w == ["--mode", "vm"]) || own.contains(&"--mode=vm");
    vm && !own.iter().any(|a| *a == "--kernel" || a.starts_with("--kernel="))
}

fn boot_of(args: &[&OsStr], opts: &LabOptions, capture: bool) -> Result<Ended, LabError> {
    if opts.guest_kernel && wants_built_guest_kernel(args) && guest_kernel::guest_kernel().files.is_empty() {
        // Building it inside L1 would take the better part of an hour under emulation.
        return Err(LabError::GuestKernelMissing);
    }
    let prepared = prepare(opts)?;
    let mut env: Vec<(String, String)> = PASSED_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    env.extend(opts.env.iter().cloned());
    let boot = qemu::Boot {
        vmlinuz: prepared.kernel.vmlinuz.clone(),
        initramfs: prepared.initramfs.clone(),
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        cpu_model: opts.cpu_model.clone(),
        run_script: init_script::run_script(
            args,
            &env,
            opts.export.as_ref().map(|e| e.l1_dir.as_str()),
            opts.terminal.map(|t| (t.rows, t.cols)),
        ),
        terminal: opts.terminal,
        export: opts.export.clone(),
        verbose: opts.verbose,
        timeout: opts.timeout,
        keep: opts.keep,
        capture,
    };
    qemu::boot(&boot, &Progress::new(opts.progress))
}

/// Runs `boot` again, once, when L1's own kernel crashed the first time (an oops or panic on
/// L1's console before the command reported an exit status), after telling `on_retry` the
/// crash's signature and L1's console tail. That is a fault of the emulated host (QEMU TCG
/// running nested KVM; seen under load, e.g. with many VMs at once), not of the command, and it
/// comes rarely and at random; a second crash is returned as the error.
pub fn retrying_an_l1_crash<T>(
    mut boot: impl FnMut() -> Result<T, LabError>,
    on_retry: impl FnOnce(&str, &str),
) -> Result<T, LabError> {
    match boot() {
        Err(LabError::L1KernelCrashed {
            signature,
            console_tail,
        }) => {
            on_retry(&signature, &console_tail);
            boot()
        }
        other => other,
    }
}

/// The environment variable that makes a timed-out lab run count as a stalled emulated host,
/// run again once (see [`retrying_a_faulty_host`]); the project's lab tests set it.
pub const RETRY_STALLED_ENV: &str = "SANDBOX_LAB_RETRY_STALLED";

/// Whether [`RETRY_STALLED_ENV`] is set (to anything but `0` or nothing).
pub fn retry_stalled_from_env() -> bool {
    std::env::var(RETRY_STALLED_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// [`retrying_an_l1_crash`], and with `stalled`, also a run that hit its timeout: under TCG an
/// L2 guest sometimes stops for good — halted with no wakeup, or L1 spinning silently — under
/// our VMM and QEMU alike (seen in CI with both), and the same run passes again. Only for
/// test runs, whose commands finish in a fraction of their timeout; `on_retry` says why.
pub fn retrying_a_faulty_host(
    mut boot: impl FnMut() -> Result<Ended, LabError>,
    stalled: bool,
    on_retry: impl FnOnce(&str, &str),
) -> Result<Ended, LabError> {
    let mut on_retry = Some(on_retry);
    let first = retrying_an_l1_crash(&mut boot, |sig, tail| {
        if let Some(f) = on_retry.take() {
            f(sig, tail)
        }
    });
    match first {
        Ok(ended) if stalled && ended.timed_out => {
            if let Some(f) = on_retry.take() {
                f(
                    "the command hit its timeout: the emulated host stalled, or the command hangs",
                    "",
                );
                return boot();
            }
            Ok(ended)
        }
        other => other,
    }
}

/// Runs `sandbox ARGS` inside L1, streaming its stdout/stderr to ours; returns how it ended.
pub fn run<S: AsRef<OsStr>>(args: &[S], opts: &LabOptions) -> Result<Ended, LabError> {
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
    boot_of(&args, opts, false)
}

/// Where [`run_sandbox`] ran the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Directly on this host (it has hardware KVM).
    Native,
    /// Inside the lab's L1.
    Lab,
}

/// What [`run_sandbox`] gives back.
#[derive(Debug, Clone)]
pub struct LabOutput {
    /// The exit status (124 when the timeout killed it).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub environment: Environment,
    pub timed_out: bool,
    /// The whole call, L1 preparation and boot included.
    pub elapsed: Duration,
    /// In the lab: from QEMU's start until the command started in L1 (kvm_amd loaded).
    pub l1_boot: Option<Duration>,
}

/// Runs `sandbox ARGS`: natively when this host has hardware KVM, else inside the lab. For VM
/// end-to-end tests, which thereby always run the guest (an error when neither way works); a
/// crash of L1's own kernel or a stall past the timeout (default [`testing::TEST_TIMEOUT`]) is
/// retried once (see [`retrying_a_faulty_host`]).
pub fn run_sandbox(args: &[&str], opts: &LabOptions) -> Result<LabOutput, LabError> {
    if HostKvm::detect().needs_lab() {
        let start = Instant::now();
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let what = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let opts = testing::with_test_timeout(opts);
        let ended = retrying_a_faulty_host(
            || boot_of(&args, &opts, true),
            true,
            |signature, tail| testing::announce_retry(&what, signature, tail),
        )?;
        return Ok(LabOutput {
            status: ended.status,
            stdout: String::from_utf8_lossy(&ended.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&ended.stderr).into_owned(),
            environment: Environment::Lab,
            timed_out: ended.timed_out,
            elapsed: start.elapsed(),
            l1_boot: ended.boot,
        });
    }
    run_native(args, opts)
}

fn run_native(args: &[&str], opts: &LabOptions) -> Result<LabOutput, LabError> {
    let sandbox = sandbox_binary(opts)?;
    let start = Instant::now();
    let shown = || format!("{} {}", sandbox.display(), args.join(" "));
    let mut child = Command::new(&sandbox)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::CommandFailed {
            command: shown(),
            detail: e.to_string(),
        })?;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_thread = std::thread::spawn(move || read_all(out_pipe.as_mut()));
    let err_thread = std::thread::spawn(move || read_all(err_pipe.as_mut()));
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| LabError::io("wait for", &sandbox, e))?
        {
            break s;
        }
        if opts.timeout.is_some_and(|t| start.elapsed() > t) {
            timed_out = true;
            let _ = child.kill();
            break child.wait().map_err(|e| LabError::io("wait for", &sandbox, e))?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    let code = if timed_out {
        124
    } else {
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    };
    let stderr = err_thread.join().unwrap_or_default();
    eprint!("{stderr}");
    Ok(LabOutput {
        status: code,
        stdout: out_thread.join().unwrap_or_default(),
        stderr,
        environment: Environment::Native,
        timed_out,
        elapsed: start.elapsed(),
        l1_boot: None,
    })
}

fn read_all<R: std::io::Read>(r: Option<&mut R>) -> String {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// [`run`], but collecting stdout/stderr instead of streaming them to ours.
pub fn qemu_run_captured<S: AsRef<OsStr>>(args: &[S], opts: &LabOptions) -> Result<Ended, LabError> {
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
    boot_of(&args, opts, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_l1_kernel_crash_is_run_again_once_and_nothing_else_is() {
        let crash = || LabError::L1KernelCrashed {
            signature: "Kernel panic - not syncing".into(),
            console_tail: "tail".into(),
        };
        let mut calls = 0;
        let mut told = Vec::new();
        let once = retrying_an_l1_crash(
            || {
                calls += 1;
                if calls == 1 {
                    Err(crash())
                } else {
                    Ok(calls)
                }
            },
            |sig, tail| told.push(format!("{sig}: {tail}")),
        );
        assert_eq!(once.unwrap(), 2);
        assert_eq!(told, ["Kernel panic - not syncing: tail"]);
        let twice = retrying_an_l1_crash(|| Err::<(), _>(crash()), |_, _| {});
        assert!(matches!(twice, Err(LabError::L1KernelCrashed { .. })));
        let mut calls = 0;
        let other = retrying_an_l1_crash(
            || {
                calls += 1;
                Err::<(), _>(LabError::Interrupted)
            },
            |_, _| panic!("only an L1 crash is retried"),
        );
        assert!(matches!(other, Err(LabError::Interrupted)) && calls == 1);
    }

    #[test]
    fn a_stalled_run_is_run_again_once_only_when_asked() {
        let ended = |timed_out: bool| Ended {
            status: if timed_out { 124 } else { 0 },
            timed_out,
            stdout: Vec::new(),
            stderr: Vec::new(),
            boot: None,
            total: std::time::Duration::ZERO,
            kept: None,
            export_error: None,
        };
        let mut calls = 0;
        let mut told = 0;
        let r = retrying_a_faulty_host(
            || {
                calls += 1;
                Ok(ended(calls == 1))
            },
            true,
            |_, _| told += 1,
        );
        assert_eq!((r.unwrap().status, calls, told), (0, 2, 1));
        let mut calls = 0;
        let r = retrying_a_faulty_host(
            || {
                calls += 1;
                Ok(ended(true))
            },
            false,
            |_, _| panic!("a timeout is final unless stalls are retried"),
        );
        assert_eq!((r.unwrap().status, calls), (124, 1));
        let mut calls = 0;
        let r = retrying_a_faulty_host(
            || {
                calls += 1;
                Ok(ended(true))
            },
            true,
            |_, _| {},
        );
        assert!(r.unwrap().timed_out && calls == 2, "a second stall is returned");
    }

    #[test]
    fn spots_vm_mode_without_its_own_kernel() {
        let v = |args: &[&str]| wants_built_guest_kernel(&args.iter().map(OsStr::new).collect::<Vec<_>>());
        assert!(v(&["run", "--mode", "vm", "--", "true"]));
        assert!(v(&["run", "--mode=vm"]));
        assert!(!v(&["run", "--mode", "vm", "--kernel", "/k", "--", "true"]));
        assert!(!v(&["run", "--mode", "container", "--", "echo", "--mode", "vm"]));
        assert!(!v(&["doctor"]));
    }
}
