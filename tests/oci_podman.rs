//! podman drives `sandbox-runtime` (`podman --runtime`): output and exit status, a memory limit
//! seen from inside, `run -d` then `stop` and `rm`, and `run -t` on a real pty. podman runs
//! with private storage under a temporary directory, cgroupfs (there is no systemd here), no
//! network and the file events backend, so nothing of the host's podman is touched.
//!
//! On this machine kind podman's default rlimits exceed the host's hard limits (runc fails the
//! same way without them): every run passes `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`.

mod oci_support;

use oci_support::{wait_output, Bundle, RUNTIME};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Podman {
    dir: tempfile::TempDir,
    image: String,
}

impl Podman {
    fn new() -> Podman {
        oci_support::preconditions();
        assert!(
            Command::new("podman").arg("--version").output().is_ok(),
            "podman is not installed: run scripts/setup (it installs Debian's podman)"
        );
        let dir = tempfile::tempdir().unwrap();
        let podman = Podman {
            dir,
            image: format!("localhost/sandbox-oci-test-{}", std::process::id()),
        };
        // An image from a busybox rootfs tarball, as `podman import` makes it.
        let bundle = Bundle::new(&["true"]);
        let tarball = podman.dir.path().join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(bundle.path().join("rootfs"))
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let out = podman
            .command(&["import", tarball.to_str().unwrap(), &podman.image])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        podman
    }

    fn command(&self, args: &[&str]) -> Command {
        let root = self.dir.path().join("storage");
        let runroot = self.dir.path().join("runroot");
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(root)
            .arg("--runroot")
            .arg(runroot)
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .arg("--runtime")
            .arg(RUNTIME)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// `podman run` with the flags this host needs, then `flags`, the image and `command`.
    fn run(&self, flags: &[&str], command: &[&str]) -> (i32, String, String) {
        let mut args = vec![
            "run",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        args.extend_from_slice(flags);
        args.push(&self.image);
        args.extend_from_slice(command);
        let child = self.command(&args).spawn().unwrap();
        let o = wait_output(child, Duration::from_secs(120));
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command(&["rm", "--all", "--force"]).output();
        let _ = self.command(&["rmi", "--all", "--force"]).output();
        // vfs layers and podman's run files may hold mounts under the directory.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in sandbox_protocol::mountinfo::parse(&mountinfo) {
            if Path::new(&m.target).starts_with(self.dir.path()) {
                let _ = nix::mount::umount2(m.target.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

#[test]
fn podman_runs_a_container_with_its_output_and_exit_status() {
    let p = Podman::new();
    let (code, stdout, stderr) = p.run(&["--rm"], &["sh", "-c", "echo hello from podman; exit 3"]);
    assert_eq!(code, 3, "stdout {stdout}\nstderr {stderr}");
    assert_eq!(stdout, "hello from podman\n", "{stderr}");
}

#[test]
fn podman_memory_limit_is_seen_inside() {
    let p = Podman::new();
    let script = "if [ -f /sys/fs/cgroup/memory.max ]; then cat /sys/fs/cgroup/memory.max; \
                  else cat /sys/fs/cgroup/memory/memory.limit_in_bytes; fi";
    let (code, stdout, stderr) = p.run(
        &["--rm", "--memory", "64m", "--cgroupns", "private"],
        &["sh", "-c", script],
    );
    assert_eq!(code, 0, "stdout {stdout}\nstderr {stderr}");
    assert_eq!(stdout.trim(), (64u64 << 20).to_string(), "{stderr}");
}

#[test]
fn podman_detached_run_stops_and_is_removed() {
    let p = Podman::new();
    let (code, stdout, stderr) = p.run(
        &["-d"],
        &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"],
    );
    assert_eq!(code, 0, "stdout {stdout}\nstderr {stderr}");
    let id = stdout.trim().to_string();
    let ps = p
        .command(&["ps", "--format", "{{.ID}} {{.Status}}"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&ps.stdout);
    assert!(listed.contains(&id[..12]) && listed.contains("Up"), "{listed}");
    let stop = p.command(&["stop", "-t", "5", &id]).output().unwrap();
    assert!(
        stop.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let rm = p.command(&["rm", &id]).output().unwrap();
    assert!(rm.status.success(), "rm: {}", String::from_utf8_lossy(&rm.stderr));
    let runtime_root = Path::new("/run/sandbox-runtime").join(&id);
    assert!(
        !runtime_root.exists(),
        "the runtime's state of {id} is gone after rm"
    );
}

#[test]
fn podman_tty_gives_the_process_a_real_pty() {
    let p = Podman::new();
    let (code, stdout, stderr) = p.run(
        &["--rm", "-t"],
        &["sh", "-c", "tty; test -t 0 && echo stdin-is-a-tty"],
    );
    assert_eq!(code, 0, "stdout {stdout}\nstderr {stderr}");
    assert!(stdout.contains("/dev/pts/"), "{stdout:?}");
    assert!(stdout.contains("stdin-is-a-tty"), "{stdout:?}");
}
