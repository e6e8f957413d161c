//! Shared by the `container_*` tests: runs the real `sandbox` binary with a private
//! `$SANDBOX_HOME`, finds the sandbox id in its `--trace` output, and checks that nothing the
//! sandbox created is left on the host (mounts, cgroups, veth, run directory).
//!
//! Needs root, busybox-static (the default image) and a built `sandbox-guest` next to the
//! `sandbox` binary (`cargo build --workspace`); each missing piece fails with the fix.

#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

/// A private `$SANDBOX_HOME` (image store and run directories) for one test.
pub struct Home {
    dir: tempfile::TempDir,
}

/// One finished `sandbox run`.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub id: Option<String>,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// The sandbox id; panics with the output when the run never got one.
    pub fn id(&self) -> &str {
        self.id
            .as_deref()
            .unwrap_or_else(|| panic!("no sandbox id in the trace output: {self:?}"))
    }

    /// Asserts the run exited with `code`, showing the output otherwise.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code(),
            code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

fn preconditions() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the container tests need root (namespaces, cgroups, veth): run them as root"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "busybox is missing (the default image is built from it): run `apt-get install busybox-static`"
    );
    let guest = Path::new(SANDBOX).with_file_name("sandbox-guest");
    assert!(
        guest.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        guest.display()
    );
}

/// Parses the sandbox id out of `--trace` output ("run directory HOME/run/ID (N µs)").
pub fn id_from_trace(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.split_once("run directory ").map(|(_, p)| p.trim()))
        // A trace line ends with the step's duration: `... run directory PATH (12 µs)`.
        .map(|p| p.rsplit_once(" (").map_or(p, |(path, _)| path))
        .and_then(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
}

impl Home {
    pub fn new() -> Home {
        preconditions();
        Home {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    /// `sandbox ARGS` with this home.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SANDBOX);
        cmd.args(args)
            .env("SANDBOX_HOME", self.path())
            .stdin(Stdio::null());
        cmd
    }

    /// `sandbox run --trace FLAGS -- CMD`, to completion (at most a minute).
    pub fn run(&self, flags: &[&str], command: &[&str]) -> Run {
        let mut args = vec!["run", "--mode", "container", "--trace"];
        args.extend_from_slice(flags);
        if !command.is_empty() {
            args.push("--");
            args.extend_from_slice(command);
        }
        let child = self
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sandbox binary starts");
        let output = wait_output(child, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        Run {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            id: id_from_trace(&stderr),
            stderr,
        }
    }

    /// `sandbox run --trace FLAGS -- CMD` in the background; returns the launcher and the id
    /// once the launcher printed it, and keeps reading stderr into the returned handle.
    pub fn spawn(&self, flags: &[&str], command: &[&str]) -> Background {
        let mut args = vec!["run", "--mode", "container", "--trace"];
        args.extend_from_slice(flags);
        args.push("--");
        args.extend_from_slice(command);
        let mut child = self
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sandbox binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let id = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if let Some(id) = id_from_trace(&seen) {
                        break id;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("the launcher printed no run directory within 30 s; stderr:\n{seen}")
                }
            }
        };
        Background {
            child,
            id,
            lines: rx,
            reader: Some(reader),
        }
    }

    /// Asserts that nothing of sandbox `id` is left on the host: no mount mentioning this home,
    /// no `sandbox/<id>` cgroup on any hierarchy, no `sbx<id>` link, and no run directory.
    pub fn assert_no_leaks(&self, id: &str) {
        let home = self.path().to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let leaked: Vec<&str> = mountinfo.lines().filter(|l| l.contains(home.as_str())).collect();
        assert!(leaked.is_empty(), "mounts left under {home}: {leaked:#?}");
        for root in cgroup_roots() {
            let dir = root.join("sandbox").join(id);
            assert!(!dir.exists(), "cgroup {} was left behind", dir.display());
        }
        let link = format!("/sys/class/net/sbx{id}");
        assert!(!Path::new(&link).exists(), "network link {link} was left behind");
        let runs: Vec<PathBuf> = std::fs::read_dir(self.run_dir())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(runs.is_empty(), "run directories left behind: {runs:?}");
    }
}

/// A copy of the `sandbox` binary (and `sandbox-guest` beside it) that any user can run: the
/// checkout may sit where other users cannot reach (root's 0700 home), and some tests run the
/// binary as uid 65534.
pub struct SharedBinary {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl SharedBinary {
    pub fn new() -> SharedBinary {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("sandbox-bin-")
            .tempdir_in("/tmp")
            .expect("a directory under /tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for name in ["sandbox", "sandbox-guest"] {
            let from = Path::new(SANDBOX).with_file_name(name);
            let to = dir.path().join(name);
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        SharedBinary {
            path: dir.path().join("sandbox"),
            _dir: dir,
        }
    }
}

/// The roots of every mounted cgroup hierarchy (v1 and v2).
pub fn cgroup_roots() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let point = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// A launcher running in the background.
pub struct Background {
    pub child: Child,
    pub id: String,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    /// Waits (at most `within`) for a stderr line containing `needle`.
    pub fn wait_for_line(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!("no stderr line with {needle:?} within {within:?}"),
            }
        }
    }

    /// Waits for the launcher to end (at most a minute); returns its status and whole stderr.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let status = wait_status(&mut self.child, Duration::from_secs(60));
        let stderr = self
            .reader
            .take()
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` at most `limit`, killing it (and failing) past that.
pub fn wait_status(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the launcher") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the launcher did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || read_all(stdout));
    let err = std::thread::spawn(move || read_all(stderr));
    let status = wait_status(&mut child, limit);
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn read_all(mut r: impl std::io::Read) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf);
    buf
}

/// Polls `cond` every 20 ms for at most `within`.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}
