//! The store on a shared host: `$SANDBOX_HOME` placed where every user can reach it (a 0755
//! directory, as `/srv/sandbox` would be) must still keep other users out of what images and
//! containers put there. Before the fix, uid 65534 got euid 0 from a setuid file a container
//! wrote into `run/<id>/upper`, opened devices through image nodes in `layers/`, and read the
//! `--env` values in `plan.json`.
//!
//! Needs root, busybox-static and a built workspace (`cargo build --workspace`).

mod container_support;

use container_support::{eventually, SANDBOX};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const NOBODY: u32 = 65534;

/// Runs busybox ARGS as uid 65534.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("/bin/busybox")
        .args(args)
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("busybox runs")
}

/// A `$SANDBOX_HOME` in a directory every user can enter, itself created 0755.
fn shared_home() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = base.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    (base, home)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn other_users_cannot_use_what_containers_and_images_leave_in_the_store() {
    let (_base, home) = shared_home();
    let mut launcher = Command::new(SANDBOX)
        .args(["run", "--mode", "container", "--env", "SECRET=hunter2", "--"])
        .args([
            "sh",
            "-c",
            "cp /bin/busybox /suid && chmod 4755 /suid && mknod /null2 c 1 3 && echo written && sleep 60",
        ])
        .env("SANDBOX_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(launcher.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "written\n");
    let run = home.join("run");
    let id = std::fs::read_dir(&run)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let dir = run.join(&id);
    let upper = dir.join("upper");
    assert!(
        upper.join("suid").is_file(),
        "the container's file is in its upper dir"
    );

    // Every level is the owner's only; so is the plan with the environment in it.
    for path in [&home, &run, &dir, &home.join("layers"), &home.join("images")] {
        assert_eq!(
            mode(path) & 0o077,
            0,
            "{} is open to others: {:o}",
            path.display(),
            mode(path)
        );
    }
    assert_eq!(mode(&dir.join("plan.json")), 0o600);
    assert_eq!(mode(&dir.join("state.json")), 0o600);

    // uid 65534 cannot run the setuid file, read the plan, or list the layers.
    let suid = upper.join("suid");
    let out = as_nobody(&["sh", "-c", &format!("exec {} id", suid.display())]);
    assert!(
        !out.status.success(),
        "uid 65534 ran the container's setuid file: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let plan = dir.join("plan.json");
    let out = as_nobody(&["cat", plan.to_str().unwrap()]);
    assert!(!out.status.success(), "uid 65534 read the plan: {out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
    let out = as_nobody(&["ls", home.join("layers").to_str().unwrap()]);
    assert!(!out.status.success(), "uid 65534 listed the layers: {out:?}");
    let node = upper.join("null2");
    let out = as_nobody(&["dd", &format!("if={}", node.display()), "count=0"]);
    assert!(
        !out.status.success(),
        "uid 65534 opened the container's device node: {out:?}"
    );

    let _ = launcher.kill();
    let _ = launcher.wait();
    let gc = Command::new(SANDBOX)
        .arg("gc")
        .env("SANDBOX_HOME", &home)
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    assert!(eventually(Duration::from_secs(5), || !dir.exists()));
}

#[test]
fn a_store_owned_by_another_user_is_refused_in_one_line() {
    let (_base, home) = shared_home();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = Command::new(SANDBOX)
        .args(["run", "--mode", "container", "--", "true"])
        .env("SANDBOX_HOME", &home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(home.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("65534"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "the store was touched"
    );
}
