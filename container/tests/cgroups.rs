//! Real cgroups on this host (run as root): the limits land in the control files, members are
//! tracked, the memory limit OOM-kills, the pids limit stops forks, the CPU quota throttles, and
//! dropping the owner or `remove_stale` kills the members and removes every directory.

use nix::unistd::{geteuid, Pid};
use sandbox_container::cgroups::{self, Cgroup, CgroupError, Layout, Placement};
use sandbox_protocol::isolation::{CpuLimits, MemoryLimits, ResourcePlan};
use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn require_root() {
    assert!(
        geteuid().is_root(),
        "these tests create real cgroups: run them as root (sudo -E cargo test -p sandbox-container)"
    );
}

/// The limits `sandbox run --memory/--cpus/--pids` asks for.
#[derive(Default)]
struct Limits {
    memory_bytes: Option<u64>,
    cpus: Option<f64>,
    pids: Option<u64>,
}

/// Creates `sandbox/<id>` with `limits`, as `sandbox run` does.
fn create(id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
    let (quota, period) = match limits.cpus.map(cgroups::cpus_to_quota) {
        Some((q, p)) => (Some(q), Some(p)),
        None => (None, None),
    };
    let memory = limits.memory_bytes.map(|m| m as i64);
    let resources = ResourcePlan {
        memory: MemoryLimits {
            limit: memory,
            swap: memory,
            ..MemoryLimits::default()
        },
        cpu: CpuLimits {
            quota,
            period,
            ..CpuLimits::default()
        },
        pids: limits.pids.map(|p| p as i64),
        ..ResourcePlan::default()
    };
    Cgroup::create(&Placement::Sandbox(id.to_string()), &resources, false)
}

fn test_id(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

/// `sh -c script`, held at a `read` until the test has put it in the cgroup and calls [`go`].
fn gated(script: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read _go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn /bin/sh")
}

fn go(child: &mut Child) {
    let mut stdin = child.stdin.take().expect("stdin is piped");
    writeln!(stdin, "go").expect("release the gated child");
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

/// The cgroup directory that holds control file `file`.
fn dir_with(cg: &Cgroup, file: &str) -> PathBuf {
    cg.paths()
        .into_iter()
        .find(|p| p.join(file).exists())
        .unwrap_or_else(|| panic!("no directory of {:?} has {file}", cg.paths()))
}

fn read(cg: &Cgroup, file: &str) -> String {
    fs::read_to_string(dir_with(cg, file).join(file))
        .unwrap()
        .trim()
        .to_string()
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "child {} still running after {limit:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn limits_land_in_the_files_and_drop_kills_members_and_removes_the_dirs() {
    require_root();
    let id = test_id("limits");
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        cpus: Some(0.5),
        pids: Some(20),
    };
    let cg = create(&id, &limits).unwrap();
    let paths = cg.paths();
    assert!(!paths.is_empty());
    for p in &paths {
        assert!(p.is_dir(), "{} missing", p.display());
        assert!(p.ends_with(format!("sandbox/{id}")), "{}", p.display());
    }
    eprintln!("layout {:?}, cgroup dirs {paths:?}", cgroups::layout());
    match cgroups::layout() {
        Layout::V1 | Layout::Hybrid => {
            assert_eq!(read(&cg, "memory.limit_in_bytes"), (64u64 << 20).to_string());
            assert_eq!(read(&cg, "cpu.cfs_period_us"), "100000");
            assert_eq!(read(&cg, "cpu.cfs_quota_us"), "50000");
        }
        Layout::V2 => {
            assert_eq!(read(&cg, "memory.max"), (64u64 << 20).to_string());
            assert_eq!(read(&cg, "cpu.max"), "50000 100000");
        }
    }
    assert_eq!(read(&cg, "pids.max"), "20");

    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    cg.add_pid(pid_of(&child)).unwrap();
    for p in &paths {
        let procs = fs::read_to_string(p.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l.trim() == child.id().to_string()),
            "{} lacks pid {}: {procs:?}",
            p.display(),
            child.id()
        );
    }
    let stats = cg.stats();
    eprintln!(
        "stats with one sleeper: {}",
        serde_json::to_string(&stats).unwrap()
    );
    assert_eq!(stats.pids_current, Some(1));
    assert!(stats.memory_current_bytes.is_some());
    assert!(!cg.oom_killed());
    assert!(cgroups::list_ids().contains(&id));

    drop(cg);
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    let status = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(!cgroups::list_ids().contains(&id));
}

#[test]
fn allocating_past_the_memory_limit_is_an_oom_kill() {
    require_root();
    let limits = Limits {
        memory_bytes: Some(32 << 20),
        ..Limits::default()
    };
    let cg = create(&test_id("oom"), &limits).unwrap();
    // tail keeps the whole newline-free stream in memory.
    let mut child = gated("head -c 256M /dev/zero | tail");
    cg.add_pid(pid_of(&child)).unwrap();
    assert!(!cg.oom_killed());
    go(&mut child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    let stats = cg.stats();
    eprintln!(
        "after the OOM: status {status:?}, {}",
        serde_json::to_string(&stats).unwrap()
    );
    assert!(
        !status.success(),
        "the allocation finished under a 32 MiB limit: {status:?}"
    );
    assert!(cg.oom_killed(), "no OOM kill recorded; status {status:?}");
    let peak = stats.memory_peak_bytes.expect("memory peak");
    assert!(peak >= 16 << 20, "peak {peak} is below half the limit");
    cg.remove().unwrap();
}

#[test]
fn the_pids_limit_stops_forks() {
    require_root();
    let limits = Limits {
        pids: Some(10),
        ..Limits::default()
    };
    let cg = create(&test_id("pids"), &limits).unwrap();
    let mut child = gated("for i in $(seq 50); do sleep 2 & done; wait");
    cg.add_pid(pid_of(&child)).unwrap();
    go(&mut child);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let refused = cgroups_events_max(&cg);
    eprintln!(
        "pids.events max {refused}; shell said: {}",
        stderr.lines().next().unwrap_or("")
    );
    assert!(
        stderr.to_lowercase().contains("fork"),
        "no fork failure reported: {stderr:?}"
    );
    assert!(refused > 0, "pids.events shows no refused fork");
    cg.remove().unwrap();
}

fn cgroups_events_max(cg: &Cgroup) -> u64 {
    read(cg, "pids.events")
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|v| v.trim().parse().ok())
        .expect("pids.events has a max line")
}

#[test]
fn a_cpu_quota_throttles_a_busy_loop() {
    require_root();
    let limits = Limits {
        cpus: Some(0.1),
        ..Limits::default()
    };
    let cg = create(&test_id("cpu"), &limits).unwrap();
    let mut child = gated("while :; do :; done");
    cg.add_pid(pid_of(&child)).unwrap();
    go(&mut child);
    std::thread::sleep(Duration::from_millis(1200));
    let stats = cg.stats();
    eprintln!(
        "busy loop at 0.1 CPU for 1.2 s: {}",
        serde_json::to_string(&stats).unwrap()
    );
    assert!(stats.cpu_nr_periods.unwrap_or(0) > 0, "{stats:?}");
    assert!(stats.cpu_nr_throttled.unwrap_or(0) > 0, "{stats:?}");
    assert!(stats.cpu_throttled_usec.unwrap_or(0) > 0, "{stats:?}");
    cg.remove().unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn remove_stale_removes_a_leaked_cgroup_and_its_members() {
    require_root();
    let id = test_id("stale");
    let cg = create(&id, &Limits::default()).unwrap();
    let paths = cg.paths();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    cg.add_pid(pid_of(&child)).unwrap();
    // The owner dies without cleaning up, as a crashed launcher would.
    std::mem::forget(cg);
    assert!(paths.iter().all(|p| p.is_dir()));
    assert!(cgroups::list_ids().contains(&id));

    cgroups::remove_stale(&id).unwrap();
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert!(!cgroups::list_ids().contains(&id));
    let status = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // Nothing left to remove is not an error.
    cgroups::remove_stale(&id).unwrap();
}

#[test]
fn a_taken_id_is_refused_without_touching_the_owner() {
    require_root();
    let id = test_id("taken");
    let first = create(&id, &Limits::default()).unwrap();
    let limits = Limits {
        pids: Some(5),
        ..Limits::default()
    };
    match create(&id, &limits) {
        Err(e @ CgroupError::Exists { .. }) => assert!(e.to_string().contains("sandbox gc"), "{e}"),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert!(first.paths().iter().all(|p| p.is_dir()));
    first.remove().unwrap();
}

#[test]
fn bad_input_is_refused_before_anything_is_created() {
    require_root();
    let id = test_id("bad");
    let limits = Limits {
        cpus: Some(0.001),
        ..Limits::default()
    };
    let err = create(&id, &limits).unwrap_err();
    assert!(err.to_string().contains("--cpus"), "{err}");
    assert!(!cgroups::list_ids().contains(&id));
    let err = create("../escape", &Limits::default()).unwrap_err();
    assert!(matches!(err, CgroupError::BadId { .. }), "{err}");
    assert!(matches!(
        cgroups::remove_stale("a/b"),
        Err(CgroupError::BadId { .. })
    ));
}

#[test]
fn a_failure_part_way_removes_what_was_created_and_only_that() {
    require_root();
    let id = test_id("partial");
    // Learn this host's directories, then occupy the last one as another owner would.
    let probe = create(&id, &Limits::default()).unwrap();
    let paths = probe.paths();
    probe.remove().unwrap();
    let (occupied, others) = paths.split_last().unwrap();
    fs::create_dir(occupied).unwrap();

    let limits = Limits {
        memory_bytes: Some(64 << 20),
        pids: Some(10),
        ..Limits::default()
    };
    let err = create(&id, &limits).unwrap_err();
    let still_there = occupied.is_dir();
    let leftovers: Vec<_> = others.iter().filter(|p| p.exists()).collect();
    fs::remove_dir(occupied).unwrap();
    assert!(matches!(err, CgroupError::Exists { .. }), "{err}");
    assert!(
        still_there,
        "the other owner's {} was removed",
        occupied.display()
    );
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
