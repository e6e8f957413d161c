//! Bad input and hard endings: each bad input is one line naming it and the fix, with a nonzero
//! status and nothing left behind; after a killed workload, a SIGTERM to the launcher, or a
//! SIGKILL of the launcher followed by `sandbox gc`, no mount, cgroup, veth or run directory
//! remains.

mod container_support;

use container_support::{cgroup_roots, wait_status, Home};
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// The launcher's own messages on stderr, without `--trace` progress (image-building progress
/// and the workload's output are other lines).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("sandbox: ") && !l.contains(" µs] "))
        .collect()
}

fn assert_nothing_created(home: &Home) {
    let runs: Vec<_> = std::fs::read_dir(home.run_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(runs.is_empty(), "run directories were created: {runs:?}");
}

#[test]
fn an_unknown_image_is_one_line_naming_it() {
    let home = Home::new();
    let run = home.run(&["--image", "no-such-image"], &["true"]);
    assert_ne!(run.code(), 0);
    let errors = error_lines(&run.stderr);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("no-such-image"), "{}", errors[0]);
    assert_nothing_created(&home);
}

#[test]
fn a_bad_size_is_refused_naming_the_string() {
    let home = Home::new();
    let run = home.run(&["--memory", "12Q"], &["true"]);
    assert_ne!(run.code(), 0);
    assert!(run.stderr.contains("12Q"), "{}", run.stderr);
    assert!(
        run.stderr.contains("512M"),
        "the fix shows the accepted form: {}",
        run.stderr
    );
    assert_nothing_created(&home);
}

#[test]
fn what_cannot_work_is_refused_before_anything_is_made() {
    let home = Home::new();
    let cpus = std::thread::available_parallelism().unwrap().get();
    let too_many = format!("{}", cpus + 1);
    for (flags, command, status, needles) in [
        (
            &["--memory", "1M"][..],
            &["true"][..],
            125,
            &["--memory 1 MiB", "at least 6 MiB"][..],
        ),
        (
            &["--cpus", &too_many],
            &["true"],
            125,
            &["--cpus", "more than this host has"],
        ),
        (&[], &[""], 1, &["empty string"]),
        (&[], &["/bin"], 126, &["\"/bin\" is a directory"]),
    ] {
        let run = home.run(flags, command);
        assert_eq!(run.code(), status, "{flags:?} {command:?}: {}", run.stderr);
        let errors = error_lines(&run.stderr);
        assert_eq!(errors.len(), 1, "{}", run.stderr);
        for needle in needles {
            assert!(errors[0].contains(needle), "{needle:?} not in {}", errors[0]);
        }
        assert_nothing_created(&home);
    }
    let run = home.run(&["--pids", "1"], &["true"]);
    assert_eq!(run.code(), 2, "{}", run.stderr);
    assert!(run.stderr.contains("at least 2"), "{}", run.stderr);
    assert_nothing_created(&home);
}

#[test]
fn a_missing_command_exits_127_naming_command_and_image() {
    let home = Home::new();
    let run = home.run(&[], &["no-such-command", "--flag"]);
    run.expect(127);
    let errors = error_lines(&run.stderr);
    let line = errors
        .iter()
        .find(|l| l.contains("no-such-command"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(line.contains("\"default\""), "the image is named: {line}");
    assert_nothing_created(&home);
}

#[test]
fn a_missing_volume_source_is_refused() {
    let home = Home::new();
    let missing = home.path().join("not-there");
    let arg = format!("{}:/data", missing.display());
    let run = home.run(&["--volume", &arg], &["true"]);
    assert_ne!(run.code(), 0);
    let errors = error_lines(&run.stderr);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("not-there") && errors[0].contains("does not exist"),
        "{}",
        errors[0]
    );
    assert_nothing_created(&home);
}

#[test]
fn a_controller_the_host_lacks_is_named_with_the_fix() {
    let home = Home::new();
    let hidden: Vec<String> = cgroup_roots()
        .iter()
        .filter(|r| {
            r.file_name()
                .is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == "pids"))
        })
        .map(|r| r.to_string_lossy().into_owned())
        .collect();
    assert!(
        !hidden.is_empty(),
        "this test hides the cgroup v1 pids hierarchy to make a host without it; this host has none \
         (pure cgroup v2), so it cannot run here"
    );
    let mut cmd = home.command(&[
        "run",
        "--mode",
        "container",
        "--trace",
        "--pids",
        "10",
        "--",
        "true",
    ]);
    // SAFETY: between fork and exec only async-signal-safe calls are made (unshare, mount,
    // umount2 through nix, which do not allocate for these short, already-built paths).
    unsafe {
        cmd.pre_exec(move || {
            use nix::mount::{mount, umount2, MntFlags, MsFlags};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            for root in &hidden {
                umount2(root.as_str(), MntFlags::MNT_DETACH)?;
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("pids") && errors[0].contains("--pids"),
        "{}",
        errors[0]
    );
    if let Some(id) = container_support::id_from_trace(&stderr) {
        home.assert_no_leaks(&id);
    }
    assert_nothing_created(&home);
}

#[test]
fn a_non_root_user_is_told_what_rootless_mode_cannot_do() {
    let home = Home::new();
    let binary = container_support::SharedBinary::new();
    let out = std::process::Command::new(&binary.path)
        .args(["run", "--mode", "container", "--memory", "64M", "--", "true"])
        .env("SANDBOX_HOME", home.path())
        .env("HOME", home.path())
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("--memory") && errors[0].contains("needs root"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_killed_workload_leaves_nothing_behind() {
    let home = Home::new();
    let run = home.run(&["--memory", "64M", "--net", "host"], &["sh", "-c", "kill -9 $$"]);
    run.expect(137);
    assert!(!run.stderr.contains("OOM"), "not an OOM kill: {}", run.stderr);
    home.assert_no_leaks(run.id());
}

#[test]
fn sigterm_to_the_launcher_reaches_the_workload() {
    let home = Home::new();
    let bg = home.spawn(
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-term >&2; exit 12' TERM; echo waiting >&2; while true; do sleep 0.1; done",
        ],
    );
    bg.wait_for_line("waiting", Duration::from_secs(30));
    let pid = nix::unistd::Pid::from_raw(bg.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let id = bg.id.clone();
    let (status, stderr) = bg.finish();
    assert_eq!(status.code(), Some(12), "{stderr}");
    assert!(stderr.contains("got-term"), "{stderr}");
    home.assert_no_leaks(&id);
}

#[test]
fn a_sigkilled_launcher_is_cleaned_up_by_gc() {
    let home = Home::new();
    let mut bg = home.spawn(&["--memory", "64M", "--net", "host"], &["sleep", "30"]);
    bg.wait_for_line("guest program started", Duration::from_secs(30));
    bg.child.kill().unwrap(); // SIGKILL: no cleanup code in the launcher runs
    wait_status(&mut bg.child, Duration::from_secs(10));
    let id = bg.id.clone();
    assert!(
        home.run_dir().join(&id).is_dir(),
        "the run directory should outlive a SIGKILLed launcher until gc"
    );
    let gc = home.command(&["gc"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&gc.stderr);
    assert!(gc.status.success(), "{stderr}");
    assert!(stderr.contains(&id), "gc names what it removed: {stderr}");
    home.assert_no_leaks(&id);
    // A second gc finds nothing.
    let again = home.command(&["gc"]).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to remove"));
}
