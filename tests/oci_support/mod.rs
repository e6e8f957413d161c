//! Shared by the `oci_*` tests: OCI bundles made from busybox-static, the real `sandbox-runtime`
//! binary with a private `--root`, and the checks that a container left nothing behind.
//!
//! Needs root and busybox-static; each missing piece fails with the fix.

#![allow(dead_code)] // each test file uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const RUNTIME: &str = env!("CARGO_BIN_EXE_sandbox-runtime");

pub fn preconditions() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the OCI runtime tests need root (namespaces, cgroups): run them as root"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "busybox is missing (bundles are made from it): run `apt-get install busybox-static`"
    );
}

/// A bundle: `dir/rootfs` with static busybox and its applets, `dir/config.json` from
/// `sandbox-runtime spec` with `args` and no terminal.
pub struct Bundle {
    pub dir: tempfile::TempDir,
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        preconditions();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let out = Command::new(RUNTIME)
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bundle = Bundle { dir };
        bundle.edit(|c| {
            c["process"]["terminal"] = false.into();
            c["process"]["args"] = serde_json::json!(args);
        });
        bundle
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes config.json.
    pub fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let path = self.path().join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        f(&mut c);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }
}

/// `sandbox-runtime --root ROOT ...` with a private root.
pub struct Runtime {
    pub root: tempfile::TempDir,
}

/// One finished command.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> &Ran {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts a refusal: non-zero, exactly one `sandbox-runtime:` line on stderr containing
    /// each of `words`.
    pub fn refused(&self, words: &[&str]) -> &Ran {
        assert_ne!(self.code, 0, "expected a refusal; stdout:\n{}", self.stdout);
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got:\n{}", self.stderr);
        for w in words {
            assert!(lines[0].contains(w), "{w:?} not in {:?}", lines[0]);
        }
        self
    }
}

impl From<Output> for Ran {
    fn from(o: Output) -> Ran {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Runtime {
    pub fn new() -> Runtime {
        preconditions();
        Runtime {
            root: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(RUNTIME);
        cmd.arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs to completion with captured output (at most a minute).
    pub fn run(&self, args: &[&str]) -> Ran {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sandbox-runtime starts");
        let out = wait_output(child, Duration::from_secs(60));
        out.into()
    }

    /// `create --bundle B ID` with the container's stdout and stderr going to `out`.
    pub fn create(&self, bundle: &Bundle, id: &str, out: &Path) -> Ran {
        let file = std::fs::File::create(out).unwrap();
        let err = file.try_clone().unwrap();
        let child = self
            .command(&["create", "--bundle", bundle.path().to_str().unwrap(), id])
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap();
        let o = wait_output(child, Duration::from_secs(60));
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: std::fs::read_to_string(out).unwrap_or_default(),
        }
    }

    /// The OCI state of `id`.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let r = self.run(&["state", id]);
        r.ok();
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("state is not JSON ({e}): {}", r.stdout))
    }

    /// Waits until `id` reports `status` (at most `within`).
    pub fn wait_status(&self, id: &str, status: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let s = self.state(id);
            if s["status"] == status {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never became {status}: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts nothing of container `id` is left: no state, no cgroup.
    pub fn assert_gone(&self, id: &str) {
        assert!(!self.root.path().join(id).exists(), "state of {id} left behind");
        let cgroups = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in cgroups.lines().filter(|l| l.contains(" - cgroup")) {
            let mount = line.split_whitespace().nth(4).unwrap();
            let dir = PathBuf::from(mount).join("sandbox").join(id);
            assert!(!dir.exists(), "cgroup {} left behind", dir.display());
        }
    }
}

/// Waits for a child with captured output, killing it after `limit`.
pub fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: stdout {} stderr {}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A unique container id for this test process.
pub fn test_id(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}
