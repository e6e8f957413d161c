//! `sandbox gc` and killed imports: a real `sandbox image import`, held in the middle of
//! committing by the store lock (as a concurrent import or `image rm` would hold it), is killed;
//! its staging directory stays until `sandbox gc` removes it. The staging of an import still
//! running is never touched, and that import completes afterwards.

use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

fn sandbox(home: &Path, args: &[&str]) -> Output {
    Command::new(SANDBOX)
        .args(args)
        .env("SANDBOX_HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("the sandbox binary starts")
}

/// Holds the store lock exclusively.
struct HeldLock {
    _file: File,
}

impl HeldLock {
    fn take(home: &Path) -> HeldLock {
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(home.join("images/.lock"))
            .unwrap();
        // SAFETY: the fd belongs to `file`, open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        HeldLock { _file: file }
    }
}

/// A store in a fresh home, and a small rootfs tarball to import into it.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let home = tempfile::tempdir().unwrap();
    let out = sandbox(home.path(), &["image", "ls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let input = home.path().join("small.tar");
    let mut builder = tar::Builder::new(File::create(&input).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "hello", &b"hi\n"[..]).unwrap();
    builder.finish().unwrap();
    (home, input)
}

fn staging_dirs(home: &Path) -> Vec<PathBuf> {
    fs::read_dir(home.join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// An import process, killed and reaped if a test fails while it runs.
struct Import(Child);

impl Drop for Import {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sandbox image import` and waits until its staging directory has its owner record.
fn start_import(home: &Path, input: &Path) -> (Import, PathBuf) {
    let child = Command::new(SANDBOX)
        .args(["image", "import", input.to_str().unwrap(), "--name", "from-child"])
        .env("SANDBOX_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Import)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready: Vec<PathBuf> = staging_dirs(home)
            .into_iter()
            .filter(|d| d.join("owner").is_file())
            .collect();
        if let [dir] = &ready[..] {
            return (child, dir.clone());
        }
        assert!(
            Instant::now() < deadline,
            "the import made no staging directory in 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn gc_removes_the_staging_of_a_killed_import() {
    let (home, input) = setup();
    let lock = HeldLock::take(home.path());
    let (mut child, dir) = start_import(home.path(), &input);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(dir.is_dir(), "a killed import leaves its staging directory");
    let out = sandbox(home.path(), &["gc"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("removed staging directory"), "{stderr}");
    assert!(!dir.exists());
    drop(lock);
    let list = sandbox(home.path(), &["image", "ls"]);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("from-child"),
        "the killed import added nothing"
    );
}

#[test]
fn gc_keeps_the_staging_of_a_running_import() {
    let (home, input) = setup();
    let lock = HeldLock::take(home.path());
    let (mut child, dir) = start_import(home.path(), &input);
    let out = sandbox(home.path(), &["gc"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        dir.join("owner").is_file(),
        "the running import's staging is intact"
    );
    drop(lock);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "the import failed: {status}");
    assert!(!dir.exists(), "the import cleans up after itself");
    let list = sandbox(home.path(), &["image", "ls"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("from-child"));
}
