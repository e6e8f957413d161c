//! Boots L1 under QEMU TCG and supervises it: streams the command's stdout/stderr (ttyS1/ttyS2)
//! as they grow, watches init's control channel (ttyS3) for the exit status, keeps the console's
//! tail for error messages, and kills QEMU on timeout or interrupt. QEMU's stdin is /dev/null
//! (attached to a terminal it stalls), and it dies with the thread that started it.

use crate::init_script::{
    sh_quote, CTL_EXIT, CTL_EXPORTED, CTL_EXPORT_FAILED, CTL_KVM_MISSING, CTL_UP, FW_CFG_RUN,
};
use crate::interrupt::interrupted;
use crate::progress::Progress;
use crate::tools::find_on_path;
use crate::LabError;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Console lines kept for error messages.
const CONSOLE_TAIL_LINES: usize = 40;
/// How long QEMU may take to power off after init reported the exit status.
const POWEROFF_GRACE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// The size of the (sparse) export disk: the most an export can carry, as a tar.
pub const EXPORT_DISK_BYTES: u64 = 4 << 30;

/// A directory copied out of L1 after the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Absolute path inside L1.
    pub l1_dir: String,
    /// Where its contents land on the host.
    pub host_dir: PathBuf,
}

/// How one L1 boot is set up.
#[derive(Debug, Clone)]
pub struct Boot {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// QEMU's `-cpu` model: `max` exposes SVM under TCG.
    pub cpu_model: String,
    /// The per-run script init sources (arguments and environment).
    pub run_script: Vec<u8>,
    /// Pass the L1 console through to stderr.
    pub verbose: bool,
    pub timeout: Option<Duration>,
    /// Keep the run directory (console log, outputs, run script, QEMU command line).
    pub keep: bool,
    /// A directory to copy out of L1 after the command.
    pub export: Option<Export>,
    /// Collect stdout/stderr instead of writing them to this process's stdout/stderr.
    pub capture: bool,
    /// ttyS1 is the command's terminal, carried over this socket (see [`crate::Terminal`]).
    pub terminal: Option<crate::Terminal>,
}

/// How L1 ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// The command's exit status (124 when timed out).
    pub status: i32,
    pub timed_out: bool,
    /// The command's stdout/stderr when captured.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From QEMU's start until init reported kvm_amd loaded and the command starting.
    pub boot: Option<Duration>,
    /// From QEMU's start until it exited.
    pub total: Duration,
    /// The kept run directory, when `keep` was set.
    pub kept: Option<PathBuf>,
    /// Why the export (if asked for) did not reach the host; the command's status stands.
    pub export_error: Option<LabError>,
}

/// The QEMU binary, found on PATH so that a test can hide it.
pub fn qemu_binary() -> Result<PathBuf, LabError> {
    find_on_path("qemu-system-x86_64").ok_or(LabError::QemuMissing)
}

fn qemu_args(boot: &Boot, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-accel",
        "tcg",
        "-M",
        "q35",
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["-cpu".into(), boot.cpu_model.clone()]);
    args.extend([
        "-m".into(),
        format!("{}M", boot.memory_mib),
        "-smp".into(),
        boot.cpus.to_string(),
    ]);
    args.extend(["-kernel".into(), boot.vmlinuz.display().to_string()]);
    args.extend(["-initrd".into(), boot.initramfs.display().to_string()]);
    // No crypto self-tests (a quarter second under TCG); the clocksource stays HPET: TCG's
    // per-vCPU TSCs are not synchronized, so tsc=reliable would trade boot time for bad clocks.
    let loglevel = if boot.verbose { "" } else { " quiet" };
    args.extend([
        "-append".into(),
        format!("console=ttyS0 panic=-1 mitigations=off cryptomgr.notests{loglevel}"),
    ]);
    args.extend([
        "-fw_cfg".into(),
        format!("name={FW_CFG_RUN},file={}", dir.join("run.sh").display()),
    ]);
    args.extend(["-serial".into(), "stdio".into()]);
    for name in ["stdout", "stderr", "control"] {
        match (name, boot.terminal) {
            ("stdout", Some(t)) => args.extend([
                "-chardev".into(),
                format!("socket,id=terminal,fd={}", t.fd),
                "-serial".into(),
                "chardev:terminal".into(),
            ]),
            _ => args.extend(["-serial".into(), format!("file:{}", dir.join(name).display())]),
        }
    }
    if boot.export.is_some() {
        args.extend([
            "-drive".into(),
            format!(
                "file={},format=raw,if=none,id=export,cache=unsafe",
                dir.join("export.tar").display()
            ),
            "-device".into(),
            "virtio-blk-pci,drive=export".into(),
        ]);
    }
    args
}

/// Unpacks the tar L1 wrote onto the export disk into the export's host directory.
fn unpack_export(disk: &Path, export: &Export) -> Result<(), LabError> {
    let fail = |detail: String| LabError::Export {
        l1_dir: export.l1_dir.clone(),
        detail,
    };
    fs::create_dir_all(&export.host_dir).map_err(|e| LabError::io("create", &export.host_dir, e))?;
    let file = File::open(disk).map_err(|e| LabError::io("open", disk, e))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    archive.set_overwrite(true);
    archive
        .unpack(&export.host_dir)
        .map_err(|e| fail(format!("unpacking into {}: {e}", export.host_dir.display())))
}

/// A file QEMU appends to, read as it grows.
struct Tail {
    file: File,
}

impl Tail {
    fn create(path: &Path) -> Result<Tail, LabError> {
        File::create(path).map_err(|e| LabError::io("create", path, e))?;
        let file = File::open(path).map_err(|e| LabError::io("open", path, e))?;
        Ok(Tail { file })
    }

    fn read_new(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = self.file.read_to_end(&mut buf);
        buf
    }
}

/// Where the command's bytes go.
struct Sink {
    capture: bool,
    to_stderr: bool,
    kept: Vec<u8>,
}

impl Sink {
    fn put(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.capture {
            self.kept.extend_from_slice(bytes);
        }
        // Captured stderr still goes to our stderr, so a failing caller shows what L1 said.
        if !self.capture || self.to_stderr {
            if self.to_stderr {
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(bytes);
                let _ = e.flush();
            } else {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(bytes);
                let _ = o.flush();
            }
        }
    }
}

fn spawn_qemu(qemu: &Path, args: &[String], terminal: Option<crate::Terminal>) -> Result<Child, LabError> {
    let keep_fd = terminal.map_or(-1, |t| t.fd);
    let mut cmd = Command::new(qemu);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl and setpgid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // QEMU dies with us; in its own process group, a terminal's Ctrl-C reaches only us,
            // and we stop it and clean up.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The terminal's socket is QEMU's to keep across exec (see `-chardev ... fd=`).
            if keep_fd >= 0 && libc::fcntl(keep_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| LabError::CommandFailed {
        command: qemu.display().to_string(),
        detail: e.to_string(),
    })
}

/// Boots L1 once and waits for it to end.
pub fn boot(boot: &Boot, progress: &Progress) -> Result<Ended, LabError> {
    let qemu = qemu_binary()?;
    let dir = tempfile::Builder::new()
        .prefix("sandbox-lab-")
        .tempdir()
        .map_err(|e| LabError::io("create a run directory in", std::env::temp_dir(), e))?;
    let dir_path = dir.path().to_path_buf();
    let run_path = dir.path().join("run.sh");
    fs::write(&run_path, &boot.run_script).map_err(|e| LabError::io("write", &run_path, e))?;
    let mut out = Tail::create(&dir.path().join("stdout"))?;
    let mut err = Tail::create(&dir.path().join("stderr"))?;
    let mut ctl = Tail::create(&dir.path().join("control"))?;
    if boot.export.is_some() {
        // Sparse: only what L1 writes takes space.
        let disk = dir.path().join("export.tar");
        File::create(&disk)
            .and_then(|f| f.set_len(EXPORT_DISK_BYTES))
            .map_err(|e| LabError::io("create the export disk", &disk, e))?;
    }
    let args = qemu_args(boot, dir.path());
    if boot.keep {
        // A script that boots the same L1 again by hand (the initramfs stays in the cache).
        let mut script =
            b"#!/bin/sh\n# Boots this run's L1 again; QEMU's stdin must not be a terminal.\nexec".to_vec();
        for arg in std::iter::once(qemu.display().to_string()).chain(args.iter().cloned()) {
            script.push(b' ');
            script.extend_from_slice(&sh_quote(arg.as_bytes()));
        }
        script.extend_from_slice(b" < /dev/null\n");
        let cmdline = dir.path().join("qemu-command.sh");
        fs::write(&cmdline, script).map_err(|e| LabError::io("write", &cmdline, e))?;
    }

    let step = progress.step(format!(
        "booting L1 ({} MiB, {} CPUs, TCG)",
        boot.memory_mib, boot.cpus
    ));
    let start = Instant::now();
    let mut child = spawn_qemu(&qemu, &args, boot.terminal)?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let console = {
        let stdout = child.stdout.take();
        let tail = Arc::clone(&tail);
        let verbose = boot.verbose;
        let log = File::create(dir.path().join("console.log")).ok();
        thread::spawn(move || follow_console(stdout, tail, verbose, log))
    };
    let qemu_stderr = {
        let mut stderr = child.stderr.take();
        thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        })
    };

    let mut stdout = Sink {
        capture: boot.capture,
        to_stderr: false,
        kept: Vec::new(),
    };
    let mut stderr = Sink {
        capture: boot.capture,
        to_stderr: true,
        kept: Vec::new(),
    };
    let mut ended = Ended::default();
    let mut ctl_buf = String::new();
    let mut exit: Option<i32> = None;
    let mut exit_seen_at: Option<Instant> = None;
    let mut kvm_missing = false;
    let mut exported: Option<Result<(), String>> = None;
    let mut booted = Some(step);
    let mut killed_for = None;
    let status = loop {
        let done = match child.try_wait() {
            Ok(done) => done,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::io("wait for", &qemu, e));
            }
        };
        stdout.put(&out.read_new());
        stderr.put(&err.read_new());
        ctl_buf.push_str(&String::from_utf8_lossy(&ctl.read_new()));
        while let Some(nl) = ctl_buf.find('\n') {
            let line: String = ctl_buf.drain(..=nl).collect();
            let mut words = line.split_whitespace();
            match words.next() {
                Some(CTL_UP) => {
                    ended.boot = Some(start.elapsed());
                    if let Some(s) = booted.take() {
                        s.done(&format!(
                            "kvm_amd loaded, L1 clock {}s",
                            words.next().unwrap_or("?")
                        ));
                    }
                }
                Some(CTL_KVM_MISSING) => kvm_missing = true,
                Some(CTL_EXPORTED) => exported = Some(Ok(())),
                Some(CTL_EXPORT_FAILED) => {
                    exported = Some(Err(line
                        .trim_end()
                        .trim_start_matches(CTL_EXPORT_FAILED)
                        .trim()
                        .to_string()))
                }
                Some(CTL_EXIT) => {
                    exit = words.next().and_then(|w| w.parse().ok());
                    exit_seen_at = Some(Instant::now());
                }
                _ => {}
            }
        }
        if let Some(status) = done {
            break Some(status);
        }
        if interrupted() {
            killed_for = Some("interrupt");
        } else if boot.timeout.is_some_and(|t| start.elapsed() > t) {
            killed_for = Some("timeout");
        } else if exit_seen_at.is_some_and(|t| t.elapsed() > POWEROFF_GRACE) {
            killed_for = Some("slow poweroff");
        }
        if killed_for.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    ended.total = start.elapsed();
    stdout.put(&out.read_new());
    stderr.put(&err.read_new());
    let _ = console.join();
    let qemu_err = qemu_stderr.join().unwrap_or_default();
    ended.stdout = stdout.kept;
    ended.stderr = stderr.kept;
    if boot.keep {
        let kept = dir.keep();
        progress.note(&format!(
            "kept the run directory {} (qemu-command.sh boots it again; console.log, stdout, stderr)",
            kept.display()
        ));
        ended.kept = Some(kept);
    }
    let console_empty = tail
        .lock()
        .map(|t| t.iter().all(|l| l.trim().is_empty()))
        .unwrap_or(false);
    let console_tail = || {
        let lines = tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<String>>())
            .unwrap_or_default();
        let mut s = lines.join("\n");
        if !qemu_err.trim().is_empty() {
            s.push_str(&format!("\nQEMU: {}", qemu_err.trim()));
        }
        s
    };
    match killed_for {
        Some("interrupt") => return Err(LabError::Interrupted),
        Some("timeout") => {
            ended.status = 124;
            ended.timed_out = true;
            return Ok(ended);
        }
        _ => {}
    }
    if kvm_missing {
        return Err(LabError::KvmUnavailable {
            console_tail: console_tail(),
        });
    }
    if let (Some(_), Some(export)) = (exit, &boot.export) {
        ended.export_error = match exported {
            Some(Ok(())) => unpack_export(&dir_path.join("export.tar"), export).err(),
            Some(Err(detail)) => Some(LabError::Export {
                l1_dir: export.l1_dir.clone(),
                detail,
            }),
            None => Some(LabError::Export {
                l1_dir: export.l1_dir.clone(),
                detail: "L1 did not report the export".into(),
            }),
        };
    }
    match exit {
        Some(code) => {
            ended.status = code;
            Ok(ended)
        }
        None if status.is_some_and(|s| !s.success()) && console_empty && !qemu_err.trim().is_empty() => {
            Err(LabError::QemuFailed {
                stderr: qemu_err.trim().to_string(),
            })
        }
        None => match l1_crash_signature(&console_tail()) {
            Some(signature) => Err(LabError::L1KernelCrashed {
                signature: signature.to_string(),
                console_tail: console_tail(),
            }),
            None => Err(LabError::NoExitStatus {
                qemu_status: status.map_or_else(|| "killed".to_string(), |s| s.to_string()),
                console_tail: console_tail(),
            }),
        },
    }
}

/// What L1's kernel prints when it crashes (oops, BUG, panic), when `console` (L1's own console,
/// not the command's output) shows one.
pub fn l1_crash_signature(console: &str) -> Option<&'static str> {
    const SIGNATURES: &[&str] = &[
        "Kernel panic - not syncing",
        "BUG: ",
        "Oops: ",
        "general protection fault",
        "double fault",
    ];
    SIGNATURES.iter().copied().find(|s| console.contains(s))
}

fn follow_console(
    stdout: Option<std::process::ChildStdout>,
    tail: Arc<Mutex<VecDeque<String>>>,
    verbose: bool,
    mut log: Option<File>,
) {
    let Some(stdout) = stdout else { return };
    let mut reader = BufReader::new(stdout);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(log) = log.as_mut() {
            let _ = log.write_all(&raw);
        }
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if verbose {
            eprintln!("L1| {line}");
        }
        if let Ok(mut t) = tail.lock() {
            if t.len() == CONSOLE_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::l1_crash_signature;

    #[test]
    fn tells_an_l1_kernel_crash_from_an_ordinary_console() {
        // The tail of a CI run whose L1 kernel overflowed a stack in the VMM's vCPU thread.
        let crashed = "[   10.834885] kvm [124]: vcpu0, guest rIP: 0xffffffff8100308a Unhandled WRMSR(0xc0010007) = 0xffff\n\
            [  193.319443] BUG: TASK stack guard page was hit at 00000000b3d5b887\n\
            [  193.430192] Kernel panic - not syncing: corrupted stack end detected inside scheduler";
        assert_eq!(l1_crash_signature(crashed), Some("Kernel panic - not syncing"));
        let oops = "[    5.1] Oops: 0000 [#1] PREEMPT SMP NOPTI";
        assert_eq!(l1_crash_signature(oops), Some("Oops: "));
        let ordinary = "[   10.834885] kvm [124]: vcpu0, guest rIP: 0xffffffff8100308a Unhandled WRMSR(0xc0010007) = 0xffff\n\
            [   11.2] reboot: Power down";
        assert_eq!(l1_crash_signature(ordinary), None);
    }
}
