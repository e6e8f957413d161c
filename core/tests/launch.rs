//! The runtime core's `sandbox run` path against a real kernel: a hand-built image (busybox-static
//! plus the guest program) run as a container through `sandbox_core::run_spec` (create, start,
//! wait, delete). Needs root, busybox-static and a built `sandbox-guest` (part of the workspace
//! build).
//!
//! The launcher clones with fork semantics, so these tests take a lock: one container at a time
//! in this test process, no other test thread allocating while the child is created.

use sandbox_core::{CoreError, Mode};
use sandbox_image::{ResolvedImage, RunConfig};
use sandbox_spec::{Outcome, SandboxSpec};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn guest_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("sandbox-guest");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p sandbox-guest` first",
        p.display()
    );
    p
}

/// A one-layer image in `dir`: /bin/busybox with its applets as links, /usr/bin/sandbox-guest.
fn image(dir: &Path) -> ResolvedImage {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "busybox is missing: run `apt-get install busybox-static`"
    );
    let layer = dir.join("layer");
    std::fs::create_dir_all(layer.join("bin")).unwrap();
    std::fs::create_dir_all(layer.join("usr/bin")).unwrap();
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    std::fs::copy(busybox, layer.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::copy(guest_binary(), layer.join("usr/bin/sandbox-guest")).unwrap();
    ResolvedImage {
        name: "handmade".into(),
        digest: "sha256:handmade".into(),
        layers: vec![layer],
        config: RunConfig::default(),
    }
}

/// `sandbox run --mode container` of `spec` with `image`.
fn run(spec: &SandboxSpec, image: &ResolvedImage) -> Result<Outcome, CoreError> {
    let started = sandbox_core::trace::now_ns();
    sandbox_core::run_spec(
        spec,
        image,
        Mode::Container,
        sandbox_core::vm::VmOptions::new(),
        started,
    )
    .map(|r| r.outcome)
}

struct Env {
    _home: tempfile::TempDir,
    _images: tempfile::TempDir,
    image: ResolvedImage,
}

fn setup() -> Env {
    let home = tempfile::tempdir().unwrap();
    // SANDBOX_HOME is read by the launcher; every test sets the same kind of value under the
    // lock, so the process-wide variable is never seen half-set.
    std::env::set_var("SANDBOX_HOME", home.path());
    let images = tempfile::tempdir().unwrap();
    let image = image(images.path());
    Env {
        _home: home,
        _images: images,
        image,
    }
}

fn sh(script: &str) -> SandboxSpec {
    SandboxSpec {
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..SandboxSpec::default()
    }
}

#[test]
fn runs_a_command_as_pid_1_with_its_exit_status() {
    let _lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = setup();
    let outcome = run(&sh("test $$ -eq 1 || exit 3; exit 7"), &env.image).unwrap();
    // Init is PID 1; sh is its child, so $$ is not 1: the status says which branch ran.
    assert!(
        outcome.exit_status == 3 || outcome.exit_status == 7,
        "{outcome:?}"
    );
    let outcome = run(&sh("exit 7"), &env.image).unwrap();
    assert_eq!(outcome.exit_status, 7, "{outcome:?}");
    eprint!("{}", outcome.timings_report());
    let phases: Vec<&str> = outcome.timings.iter().map(|t| t.phase.as_str()).collect();
    assert_eq!(
        phases,
        [
            "launcher-start",
            "namespaces-ready",
            "rootfs-ready",
            "exec",
            "exit"
        ]
    );
    let runs = std::fs::read_dir(env._home.path().join("run")).unwrap().count();
    assert_eq!(runs, 0, "the run directory must be removed");
}

#[test]
fn a_missing_command_is_refused_before_anything_is_created() {
    let _lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = setup();
    let spec = SandboxSpec {
        command: vec!["no-such-tool".into()],
        ..SandboxSpec::default()
    };
    let err = run(&spec, &env.image).unwrap_err();
    assert_eq!(err.exit_status(), 127);
    assert!(
        err.to_string().contains("no-such-tool") && err.to_string().contains("handmade"),
        "{err}"
    );
    assert!(
        !env._home.path().join("run").exists()
            || std::fs::read_dir(env._home.path().join("run")).unwrap().count() == 0
    );
}
