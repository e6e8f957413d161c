//! `sandbox run --userns`: a root launcher's container in a user namespace of its own, root
//! inside mapped to an unprivileged host range. Inside it is root and can change its image; on
//! the host its processes and files are host uid BASE, and what root owns on the host is out of
//! its reach. VM mode and a non-root launcher are refused in one line, and nothing is left.

mod container_support;

use container_support::{cgroup_roots, eventually, Home, SharedBinary};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BASE: u32 = 1_000_000;
const NOBODY: u32 = 65534;

fn userns_flag() -> String {
    format!("--userns={BASE}")
}

/// Error lines of the launcher itself.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("sandbox: ")).collect()
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// The host pids of sandbox `id`'s processes, from its cgroup.
fn pids_of(id: &str) -> Vec<i32> {
    for root in cgroup_roots() {
        let procs = root.join("sandbox").join(id).join("cgroup.procs");
        if let Ok(text) = std::fs::read_to_string(&procs) {
            let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if !pids.is_empty() {
                return pids;
            }
        }
    }
    Vec::new()
}

/// The real, effective, saved and filesystem ids on a `/proc/PID/status` line (`Uid:`/`Gid:`).
fn status_ids(pid: i32, line: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .map(|rest| rest.split_whitespace().filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default()
}

#[test]
fn root_inside_is_an_unprivileged_host_range() {
    let home = Home::new();
    let run = home.run(
        &[&userns_flag()],
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g",
        ],
    );
    run.expect(0);
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let map = ["0", "1000000", "65536"];
    assert_eq!(lines, [&map[..], &map[..], &["0"], &["0"]], "{}", run.stderr);
    assert!(
        run.stderr.contains("userns.layers: 2 layers copied into"),
        "the shift is traced: {}",
        run.stderr
    );
    home.assert_no_leaks(run.id());
}

#[test]
fn without_a_base_the_range_is_the_subid_line_or_the_default() {
    let expected = sandbox_spec::IdRange::from_host().expect("the host's subid files parse");
    let home = Home::new();
    let run = home.run(
        &["--userns"],
        &["cat", "/proc/self/uid_map", "/proc/self/gid_map"],
    );
    run.expect(0);
    let lines: Vec<Vec<String>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let line = |base: u32| vec!["0".to_string(), base.to_string(), "65536".to_string()];
    assert_eq!(lines, [line(expected.uid), line(expected.gid)]);
    home.assert_no_leaks(run.id());
}

#[test]
fn the_container_changes_its_image_as_host_uid_base() {
    let home = Home::new();
    let bg = home.spawn(
        &[&userns_flag()],
        &[
            "sh",
            "-c",
            "echo made > /made-here && echo extra-line >> /etc/passwd && mkdir /root-dir && \
             trap 'exit 12' TERM; echo waiting >&2; while true; do sleep 0.1; done",
        ],
    );
    bg.wait_for_line("waiting", Duration::from_secs(30));
    let upper = home.run_dir().join(&bg.id).join("upper");
    assert_eq!(owner(&upper.join("made-here")), (BASE, BASE), "a new file");
    assert_eq!(owner(&upper.join("root-dir")), (BASE, BASE), "a new directory");
    assert_eq!(owner(&upper), (BASE, BASE), "the upper dir itself");
    // /etc/passwd was copied up from the image, and its copy is the container's root's.
    let passwd = upper.join("etc/passwd");
    assert_eq!(owner(&passwd), (BASE, BASE));
    assert!(std::fs::read_to_string(&passwd)
        .unwrap()
        .ends_with("extra-line\n"));
    // Neither the image's layers nor their shifted copies were written to.
    let layers = home.path().join("layers");
    let subdirs = |dir: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut with_passwd: Vec<_> = subdirs(&layers.join("sha256"));
    for range in subdirs(&layers.join("userns")) {
        with_passwd.extend(subdirs(&range));
    }
    with_passwd.retain(|l| l.join("etc/passwd").is_file());
    assert_eq!(
        with_passwd.len(),
        2,
        "the image's layer and its copy: {with_passwd:?}"
    );
    for layer in with_passwd {
        let passwd = std::fs::read_to_string(layer.join("etc/passwd")).unwrap();
        assert!(
            !passwd.contains("extra-line"),
            "{} was written to",
            layer.display()
        );
    }
    // Every process of the container is host uid and gid BASE, not root.
    let pids = pids_of(&bg.id);
    assert!(pids.len() >= 2, "init and sh at least: {pids:?}");
    for pid in pids {
        assert_eq!(status_ids(pid, "Uid:"), [BASE; 4], "pid {pid}");
        assert_eq!(status_ids(pid, "Gid:"), [BASE; 4], "pid {pid}");
    }
    let pid = nix::unistd::Pid::from_raw(bg.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let id = bg.id.clone();
    let (status, stderr) = bg.finish();
    assert_eq!(status.code(), Some(12), "{stderr}");
    home.assert_no_leaks(&id);
}

#[test]
fn a_killed_launcher_takes_the_container_with_it() {
    let home = Home::new();
    let mut bg = home.spawn(
        &[&userns_flag()],
        &["sh", "-c", "echo waiting >&2; while true; do sleep 0.1; done"],
    );
    bg.wait_for_line("waiting", Duration::from_secs(30));
    let pids = pids_of(&bg.id);
    assert!(!pids.is_empty());
    // SIGKILL: no cleanup code in the launcher runs. Becoming the namespace's root (another
    // host uid) clears the parent-death signal; the first process must have asked again.
    bg.child.kill().unwrap();
    let _ = bg.child.wait();
    let gone = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    };
    assert!(
        eventually(Duration::from_secs(10), || pids.iter().all(gone)),
        "the container outlived its launcher: {pids:?}"
    );
    let id = bg.id.clone();
    drop(bg);
    let gc = home.command(&["gc"]).output().unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    home.assert_no_leaks(&id);
}

#[test]
fn what_host_root_owns_is_out_of_its_reach() {
    let home = Home::new();
    // The volume lives under the home, which is root's and 0700 like the store: reachable only
    // because the launcher's side opens it.
    let vol = home.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(vol.join("secret"), "host root only\n").unwrap();
    std::fs::set_permissions(vol.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(vol.join("public"), "anyone\n").unwrap();
    std::fs::set_permissions(vol.join("public"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let volume = format!("{}:/vol", vol.display());
    let script = "cat /vol/public; stat -c '%u:%g' /vol/secret; \
                  cat /vol/secret 2>/dev/null || echo secret-denied; \
                  touch /vol/new 2>/dev/null || echo write-denied";
    let run = home.run(&[&userns_flag(), "--volume", &volume], &["sh", "-c", script]);
    run.expect(0);
    assert_eq!(
        run.stdout,
        format!("anyone\n{NOBODY}:{NOBODY}\nsecret-denied\nwrite-denied\n"),
        "{}",
        run.stderr
    );
    assert!(!vol.join("new").exists());
    home.assert_no_leaks(run.id());
    // Without --userns the container's root is the host's.
    let run = home.run(&["--volume", &volume], &["cat", "/vol/secret"]);
    run.expect(0);
    assert_eq!(run.stdout, "host root only\n");
    home.assert_no_leaks(run.id());
}

#[test]
fn shifted_layers_are_made_once_and_go_with_the_image() {
    let home = Home::new();
    let first = home.run(&[&userns_flag()], &["true"]);
    first.expect(0);
    assert!(first.stderr.contains("2 layers copied"), "{}", first.stderr);
    let second = home.run(&[&userns_flag()], &["true"]);
    second.expect(0);
    assert!(
        second.stderr.contains("userns.layers: 2 layers reused"),
        "{}",
        second.stderr
    );
    let range = home.path().join(format!("layers/userns/{BASE}-{BASE}"));
    let copies = || std::fs::read_dir(&range).map(|d| d.count()).unwrap_or(0);
    assert_eq!(copies(), 2, "the image's layer and the guest layer");
    assert_eq!(std::fs::metadata(&range).unwrap().mode() & 0o7777, 0o700);
    let rm = home.command(&["image", "rm", "default"]).output().unwrap();
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    assert_eq!(
        copies(),
        1,
        "only the guest layer's copy stays, as the guest layer does"
    );
    home.assert_no_leaks(first.id());
    home.assert_no_leaks(second.id());
}

#[test]
fn userns_in_vm_mode_is_refused_in_one_line() {
    let home = Home::new();
    let out = home
        .command(&["run", "--mode", "vm", "--userns", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line = error_lines(&stderr)[0];
    assert!(
        line.contains("--userns") && line.contains("--mode container"),
        "why and the remedy: {line}"
    );
    assert!(
        !home.run_dir().exists() && !home.path().join("layers").exists(),
        "nothing made"
    );
}

#[test]
fn a_non_root_launcher_is_told_it_has_a_user_namespace_already() {
    let home = Home::new();
    let binary = SharedBinary::new();
    let out = Command::new(&binary.path)
        .args(["run", "--mode", "container", "--userns", "--", "true"])
        .env("SANDBOX_HOME", home.path())
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("--userns needs root") && errors[0].contains(&format!("uid {NOBODY}")),
        "{}",
        errors[0]
    );
    assert!(eventually(Duration::from_secs(1), || !home.run_dir().exists()));
}
