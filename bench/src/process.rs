//! Running things and reading what they report: `sandbox run` with its `--outcome` JSON, the
//! guest workloads natively, processes held until they say ready, and their memory in smaps.

use crate::config::Mode;
use crate::error::BenchError;
use sandbox_protocol::smaps::{self, Mapping};
use sandbox_spec::Outcome;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What one finished process left: its wall-clock time (from the harness), output, status, and
/// the launcher's Outcome when it was a sandbox.
#[derive(Debug)]
pub struct Finished {
    pub wall: Duration,
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub outcome: Option<Outcome>,
}

impl Finished {
    /// The last JSON object line of stdout (every workload prints exactly one).
    pub fn result(&self, what: &str) -> Result<Value, BenchError> {
        last_json(&self.stdout).ok_or_else(|| BenchError::NoResult {
            what: what.to_string(),
            stdout: tail(&self.stdout),
        })
    }

    /// Fails unless the process exited 0, quoting its stderr.
    pub fn check(self, what: &str) -> Result<Finished, BenchError> {
        if self.status == 0 {
            Ok(self)
        } else {
            Err(BenchError::run(
                what,
                format!("exit status {}: {}", self.status, tail(&self.stderr)),
            ))
        }
    }
}

/// The last line of `text` that parses as a JSON object.
pub fn last_json(text: &str) -> Option<Value> {
    text.lines()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(Value::is_object))
}

/// The last 400 characters of `s`, on one line.
pub fn tail(s: &str) -> String {
    let s = s.trim();
    let start = s.char_indices().rev().nth(399).map_or(0, |(i, _)| i);
    s[start..].replace('\n', " | ")
}

/// How to launch a sandbox: the `sandbox` binary, the mode, the image, extra `run` flags.
#[derive(Debug, Clone)]
pub struct SandboxCommand {
    pub bin: PathBuf,
    pub mode: Mode,
    pub image: String,
    pub flags: Vec<String>,
    pub command: Vec<String>,
}

impl SandboxCommand {
    pub fn new(bin: &Path, mode: Mode, image: &str, command: &[&str]) -> SandboxCommand {
        SandboxCommand {
            bin: bin.to_path_buf(),
            mode,
            image: image.to_string(),
            flags: Vec::new(),
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn flag(mut self, flag: impl Into<String>) -> Self {
        self.flags.push(flag.into());
        self
    }

    fn build(&self, outcome: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "run",
            "--mode",
            self.mode.name(),
            "--image",
            &self.image,
            "--outcome",
        ])
        .arg(outcome)
        .args(&self.flags)
        .arg("--")
        .args(&self.command)
        .stdin(Stdio::null());
        cmd
    }

    /// The command line it runs, the outcome file shown as `OUTCOME.json` (for the report).
    pub fn argv(&self) -> Vec<String> {
        let cmd = self.build(Path::new("OUTCOME.json"));
        std::iter::once(self.bin.file_name().map_or_else(
            || self.bin.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ))
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect()
    }

    fn describe(&self) -> String {
        format!("sandbox run --mode {} -- {}", self.mode, self.command.join(" "))
    }

    /// Runs it to the end.
    pub fn run(&self) -> Result<Finished, BenchError> {
        let outcome_file = OutcomeFile::new()?;
        let mut cmd = self.build(&outcome_file.path);
        let finished = run_to_end(&mut cmd, &self.describe())?;
        Ok(Finished {
            outcome: outcome_file.read(),
            ..finished
        })
    }

    /// Starts it; [`Held::wait_ready`] then waits for the workload's `ready` line.
    pub fn spawn(&self) -> Result<Held, BenchError> {
        let outcome_file = OutcomeFile::new()?;
        let mut cmd = self.build(&outcome_file.path);
        Held::spawn(&mut cmd, &self.describe(), Some(outcome_file))
    }
}

/// A temporary file the launcher writes its Outcome to.
pub struct OutcomeFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl OutcomeFile {
    fn new() -> Result<OutcomeFile, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("sandbox-bench-")
            .tempdir()
            .map_err(|e| BenchError::io("cannot create a temporary directory in", std::env::temp_dir(), e))?;
        Ok(OutcomeFile {
            path: dir.path().join("outcome.json"),
            _dir: dir,
        })
    }

    fn read(&self) -> Option<Outcome> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The longest a run may take before it is killed (a VM under emulation takes seconds; a hung
/// one must not stall the whole bench).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `cmd` to the end, timing it from spawn to exit; killed after [`RUN_TIMEOUT`].
pub fn run_to_end(cmd: &mut Command, what: &str) -> Result<Finished, BenchError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Spawn { program, source })?;
    let pid = libc::pid_t::try_from(child.id()).ok();
    let (done, watch) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let (Err(mpsc::RecvTimeoutError::Timeout), Some(pid)) = (watch.recv_timeout(RUN_TIMEOUT), pid) {
            // SAFETY: kill(2) involves no memory. The pid is our child's: it is reaped only when
            // the wait below returns, and `done` is sent right after; only in that gap of a few
            // instructions, after RUN_TIMEOUT, could the pid have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let output = child.wait_with_output();
    let wall = start.elapsed();
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(false);
    let output = output.map_err(|e| BenchError::run(what, format!("waiting for it: {e}")))?;
    if killed {
        return Err(BenchError::run(
            what,
            format!(
                "still running after {} s: killed ({})",
                RUN_TIMEOUT.as_secs(),
                tail(&String::from_utf8_lossy(&output.stderr))
            ),
        ));
    }
    Ok(Finished {
        wall,
        status: exit_code(output.status),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        outcome: None,
    })
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A running process whose stdout is watched for a ready line.
pub struct Held {
    child: Child,
    what: String,
    started: Instant,
    /// Stdout lines, each with when the reader saw it.
    lines: mpsc::Receiver<(Instant, String)>,
    stdout_seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    outcome_file: Option<OutcomeFile>,
}

impl Held {
    /// Spawns `cmd` with piped stdout and stderr.
    pub fn spawn(
        cmd: &mut Command,
        what: &str,
        outcome_file: Option<OutcomeFile>,
    ) -> Result<Held, BenchError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| BenchError::Spawn { program, source })?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                s
            })
        });
        Ok(Held {
            child,
            what: what.to_string(),
            started,
            lines,
            stdout_seen: Vec::new(),
            stderr,
            outcome_file,
        })
    }

    /// The last stdout line seen so far.
    pub fn last_line(&self) -> Option<&str> {
        self.stdout_seen.last().map(String::as_str)
    }

    /// The process id (the launcher's, or QEMU's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stdout line satisfies `is_ready`; returns the time from the spawn until that
    /// line arrived (not until this call saw it: with many held at once, one waited for later
    /// may have been ready earlier).
    pub fn wait_ready(
        &mut self,
        is_ready: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<Duration, BenchError> {
        let deadline = self.started + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    let ready = is_ready(&line);
                    self.stdout_seen.push(line);
                    if ready {
                        return Ok(at.saturating_duration_since(self.started));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let f = self.finish();
                    return Err(BenchError::run(
                        &self.what,
                        format!(
                            "not ready after {} s (killed): {}",
                            timeout.as_secs(),
                            f.map(|f| format!("{} {}", tail(&f.stdout), tail(&f.stderr)))
                                .unwrap_or_default()
                        ),
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let f = self.finish()?;
                    return Err(BenchError::run(
                        &self.what,
                        format!(
                            "ended (status {}) before it was ready: {} {}",
                            f.status,
                            tail(&f.stdout),
                            tail(&f.stderr)
                        ),
                    ));
                }
            }
        }
    }

    /// Sends SIGTERM (the launchers forward it to the workload and clean up), then waits up to
    /// `grace` before killing it.
    pub fn terminate(&mut self, grace: Duration) -> Result<Finished, BenchError> {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid (not yet reaped, so not reused); no memory
            // is involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        self.finish()
    }

    /// Waits for the process to end by itself, for at most `timeout` since it was spawned (then
    /// it is killed, and that is an error); collects the rest of its output and its Outcome.
    pub fn finish_within(&mut self, timeout: Duration) -> Result<Finished, BenchError> {
        let left = (self.started + timeout).saturating_duration_since(Instant::now());
        let pid = libc::pid_t::try_from(self.child.id()).ok();
        let (done, watch) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if let (Err(mpsc::RecvTimeoutError::Timeout), Some(pid)) = (watch.recv_timeout(left), pid) {
                // SAFETY: kill(2) involves no memory. The pid is our child's, not reaped until
                // the wait below returns (and `done` is sent right after it).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
            false
        });
        let f = self.finish();
        let _ = done.send(());
        if watchdog.join().unwrap_or(false) {
            let f = f?;
            return Err(BenchError::run(
                &self.what,
                format!(
                    "still running {} s after it started: killed ({} {})",
                    timeout.as_secs(),
                    tail(&f.stdout),
                    tail(&f.stderr)
                ),
            ));
        }
        f
    }

    /// Waits for the process to end; collects the rest of its output and its Outcome.
    pub fn finish(&mut self) -> Result<Finished, BenchError> {
        let status = self
            .child
            .wait()
            .map_err(|e| BenchError::run(&self.what, format!("waiting for it: {e}")))?;
        let wall = self.started.elapsed();
        while let Ok((_, line)) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.stdout_seen.push(line);
        }
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        Ok(Finished {
            wall,
            status: exit_code(status),
            stdout: self.stdout_seen.join("\n"),
            stderr,
            outcome: self.outcome_file.as_ref().and_then(OutcomeFile::read),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // A held process is ours: never leave it running when a scenario fails half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `pid` and all its descendants (from /proc/*/stat), `pid` first.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The fields after the parenthesised command: state, ppid, ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    tree
}

/// Whether a stdout line is the `ready` workload's result.
pub fn is_ready_result(line: &str) -> bool {
    line.contains("\"workload\":\"ready\"")
}

/// A process's memory from `/proc/PID/smaps`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    /// RSS, PSS and size of the guest RAM (a VMM's): see [`Memory::parse`].
    pub guest_rss: u64,
    pub guest_pss: u64,
    pub guest_size: u64,
}

impl Memory {
    /// Reads `/proc/PID/smaps`; `guest_ram` as in [`Memory::parse`].
    pub fn of(pid: u32, guest_ram: Option<u64>) -> Result<Memory, BenchError> {
        let path = format!("/proc/{pid}/smaps");
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io("cannot read", &path, e))?;
        Ok(Memory::parse(&text, guest_ram))
    }

    /// Sums smaps text and sets the guest RAM apart: the largest mapping, or, given the guest's
    /// memory size, the run of contiguous mappings around it spanning exactly that size (our
    /// VMM maps its kernel file copy-on-write into guest RAM, which splits that one mapping).
    pub fn parse(smaps: &str, guest_ram: Option<u64>) -> Memory {
        let maps = smaps::parse(smaps);
        let mut m = Memory {
            rss: maps.iter().map(|x| x.rss).sum(),
            pss: maps.iter().map(|x| x.pss).sum(),
            ..Memory::default()
        };
        let Some(largest) = (0..maps.len()).max_by_key(|&i| maps[i].end - maps[i].start) else {
            return m;
        };
        let (lo, hi) = guest_ram
            .and_then(|size| contiguous_span(&maps, largest, size))
            .unwrap_or((largest, largest));
        let guest = &maps[lo..=hi];
        m.guest_rss = guest.iter().map(|x| x.rss).sum();
        m.guest_pss = guest.iter().map(|x| x.pss).sum();
        m.guest_size = maps[hi].end - maps[lo].start;
        m
    }
}

/// The indices `(lo, hi)` of contiguous mappings around `at` whose span is exactly `size`.
fn contiguous_span(maps: &[Mapping], at: usize, size: u64) -> Option<(usize, usize)> {
    let mut lo = at;
    loop {
        let mut hi = at;
        loop {
            match (maps[hi].end - maps[lo].start).cmp(&size) {
                std::cmp::Ordering::Equal => return Some((lo, hi)),
                std::cmp::Ordering::Greater => break,
                std::cmp::Ordering::Less => {}
            }
            if hi + 1 >= maps.len() || maps[hi + 1].start != maps[hi].end {
                break;
            }
            hi += 1;
        }
        if lo == 0 || maps[lo - 1].end != maps[lo].start {
            return None;
        }
        lo -= 1;
    }
}

/// Bytes to MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/sandbox
Size:               1024 kB
Rss:                 800 kB
Pss:                 400 kB
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:               40960 kB
Pss:               40960 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  12 kB
Pss:                  12 kB
";

    #[test]
    fn smaps_sums_and_largest_mapping() {
        let m = Memory::parse(SMAPS, None);
        assert_eq!(m.rss, (800 + 40960 + 12) * 1024);
        assert_eq!(m.pss, (400 + 40960 + 12) * 1024);
        assert_eq!(m.guest_size, 131072 * 1024);
        assert_eq!(m.guest_rss, 40960 * 1024);
        assert_eq!(Memory::parse(SMAPS, Some(131072 * 1024)), m);
    }

    /// Guest RAM split by a file mapped into its middle: the three pieces are the guest's, the
    /// contiguous mapping after them (a thread stack, say) is not.
    #[test]
    fn guest_ram_split_by_a_file_mapping_is_summed() {
        let smaps = "\
7f0000000000-7f0001000000 rw-p 00000000 00:00 0
Size:              16384 kB
Rss:                 100 kB
Pss:                 100 kB
7f0001000000-7f0001c00000 rw-p 00200000 fe:01 77                         /cache/vmlinux
Size:              12288 kB
Rss:                5000 kB
Pss:                2500 kB
7f0001c00000-7f0008000000 rw-p 00000000 00:00 0
Size:             102400 kB
Rss:                 900 kB
Pss:                 900 kB
7f0008000000-7f0008100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                   8 kB
Pss:                   8 kB
";
        let m = Memory::parse(smaps, Some(128 << 20));
        assert_eq!(m.guest_size, 128 << 20);
        assert_eq!(m.guest_rss, (100 + 5000 + 900) * 1024);
        assert_eq!(m.guest_pss, (100 + 2500 + 900) * 1024);
        assert_eq!(m.rss - m.guest_rss, 8 * 1024);
        // Without the size, only the largest piece.
        assert_eq!(Memory::parse(smaps, None).guest_rss, 900 * 1024);
    }

    #[test]
    fn this_process_has_memory() {
        let m = Memory::of(std::process::id(), None).unwrap();
        assert!(m.rss > 0 && m.pss > 0 && m.guest_size > 0);
    }

    #[test]
    fn last_json_line_wins_and_text_is_skipped() {
        let v = last_json("starting\n{\"a\":1}\nnoise\n{\"workload\":\"cpu\"}\n").unwrap();
        assert_eq!(v["workload"], "cpu");
        assert!(last_json("no json here\n{broken").is_none());
        assert!(is_ready_result(r#"{"channel":"fd:8","workload":"ready"}"#));
    }

    #[test]
    fn held_process_reports_ready_time_and_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo starting; echo '{\"workload\":\"ready\"}'; echo done"]);
        let mut held = Held::spawn(&mut cmd, "sh", None).unwrap();
        held.wait_ready(is_ready_result, Duration::from_secs(10)).unwrap();
        let f = held.finish().unwrap();
        assert_eq!(f.status, 0);
        assert!(f.stdout.contains("done"), "{}", f.stdout);
    }

    #[test]
    fn a_held_process_that_does_not_end_in_time_is_killed_and_an_error() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 30"]);
        let mut held = Held::spawn(&mut cmd, "sleeper", None).unwrap();
        held.wait_ready(|l| l == "started", Duration::from_secs(10))
            .unwrap();
        let begun = Instant::now();
        let err = held
            .finish_within(Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sleeper") && err.contains("killed"), "{err}");
        assert!(begun.elapsed() < Duration::from_secs(10));
        let mut quick = Command::new("true");
        let mut held = Held::spawn(&mut quick, "true", None).unwrap();
        assert_eq!(held.finish_within(Duration::from_secs(10)).unwrap().status, 0);
    }

    #[test]
    fn held_process_that_ends_unready_is_an_error() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo nope; exit 3"]);
        let mut held = Held::spawn(&mut cmd, "sh", None).unwrap();
        let err = held
            .wait_ready(is_ready_result, Duration::from_secs(10))
            .unwrap_err();
        assert!(err.to_string().contains("status 3"), "{err}");
    }
}
