//! `sandbox run --mode container --trace` prints real values: the cgroup directories it names
//! exist while the workload runs and hold the limits the trace says were written; the namespace
//! inodes differ from the host's `/proc/self/ns/*`; and without `--trace` nothing is printed.
//!
//! Needs root and busybox-static, like the other container tests (see container_support).

mod container_support;

use container_support::{wait_status, Home};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One `trace +µs step: values (N µs)` line, split.
#[derive(Debug, Clone)]
struct Step {
    name: String,
    values: String,
}

fn parse(line: &str) -> Option<Step> {
    let rest = line.strip_prefix("trace +")?;
    let (at, rest) = rest.split_once(' ')?;
    at.parse::<u64>().ok()?;
    let (name, rest) = rest.split_once(": ")?;
    let (values, duration) = rest.rsplit_once(" (")?;
    duration.strip_suffix(" µs)")?.parse::<u64>().ok()?;
    Some(Step {
        name: name.to_string(),
        values: values.to_string(),
    })
}

fn host_ns_inode(name: &str) -> u64 {
    std::fs::metadata(format!("/proc/self/ns/{name}"))
        .unwrap_or_else(|e| panic!("reading /proc/self/ns/{name}: {e}"))
        .ino()
}

/// Reads stderr lines of a background launcher until `until` matches one; returns the trace
/// steps seen so far (and every line, for failure messages).
fn read_until(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    until: impl Fn(&Step) -> bool,
) -> Vec<Step> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "the trace never reached the step; stderr so far:\n{}",
                seen.join("\n")
            )
        });
        seen.push(line.clone());
        if parse(&line).is_some_and(|s| until(&s)) {
            return seen.iter().filter_map(|l| parse(l)).collect();
        }
    }
}

#[test]
fn the_traced_cgroup_exists_during_the_run_and_holds_the_written_limits() {
    let home = Home::new();
    let mut child = home
        .command(&[
            "run",
            "--mode",
            "container",
            "--trace",
            "--memory",
            "96M",
            "--pids",
            "40",
            "--cpus",
            "0.5",
            "--",
            "sleep",
            "3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sandbox binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    // "started" comes after exec: the workload is sleeping now, inside the cgroup.
    let steps = read_until(&rx, &mut seen, |s| s.name == "started");

    let created: Vec<PathBuf> = steps
        .iter()
        .filter(|s| s.name == "cgroup.create")
        .map(|s| PathBuf::from(s.values.split(" (").next().unwrap()))
        .collect();
    assert!(!created.is_empty(), "no cgroup.create step:\n{}", seen.join("\n"));
    for dir in &created {
        assert!(
            dir.is_dir(),
            "traced cgroup {} does not exist during the run",
            dir.display()
        );
    }
    let mut writes: BTreeMap<PathBuf, String> = BTreeMap::new();
    for s in steps.iter().filter(|s| s.name == "cgroup.write") {
        let (path, value) = s.values.split_once(" = ").expect("cgroup.write: PATH = VALUE");
        writes.insert(PathBuf::from(path), value.to_string());
    }
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut limits = 0;
    for (path, value) in &writes {
        assert!(
            created.iter().any(|d| path.starts_with(d)),
            "{} was written outside the traced cgroups",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "cgroup.procs" {
            let now = read(path);
            // The launcher wrote the first process's pid; it is still a member.
            assert!(
                now.lines().any(|l| l.trim() == value),
                "{name}: {value} not in {now:?}"
            );
        } else if [
            "memory.limit_in_bytes",
            "memory.max",
            "pids.max",
            "cpu.cfs_quota_us",
            "cpu.max",
        ]
        .contains(&name.as_ref())
        {
            // (Write-only files such as devices.allow are left out: they cannot be read back.)
            let now = read(path);
            assert_eq!(
                now.trim(),
                value,
                "{} holds another value than traced",
                path.display()
            );
            limits += 1;
        }
    }
    assert!(
        limits >= 3,
        "the trace showed fewer than 3 limit writes: {writes:#?}"
    );
    let memory = writes
        .iter()
        .find(|(p, _)| p.ends_with("memory.limit_in_bytes") || p.ends_with("memory.max"))
        .expect("a memory limit write");
    assert_eq!(memory.1, &(96u64 << 20).to_string());

    let status = wait_status(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", seen.join("\n"));
    for dir in &created {
        assert!(!dir.exists(), "{} outlived the run", dir.display());
    }
}

#[test]
fn traced_namespace_inodes_differ_from_the_hosts() {
    let home = Home::new();
    let run = home.run(&[], &["true"]).expect(0).stderr.clone();
    let steps: Vec<Step> = run.lines().filter_map(parse).collect();
    let mut names = Vec::new();
    for s in steps.iter().filter(|s| s.name == "namespace") {
        // "pid inode 4026532180 (host 4026531836) by clone"
        let words: Vec<&str> = s.values.split_whitespace().collect();
        let name = words[0];
        let inode: u64 = words[2]
            .parse()
            .unwrap_or_else(|_| panic!("inode in {:?}", s.values));
        let host: u64 = words[4].trim_end_matches(')').parse().unwrap();
        assert_eq!(
            host,
            host_ns_inode(name),
            "the traced host inode of {name} is not the host's"
        );
        assert_ne!(
            inode,
            host_ns_inode(name),
            "the container's {name} namespace is the host's"
        );
        names.push(name.to_string());
    }
    names.sort();
    assert_eq!(names, ["cgroup", "ipc", "mnt", "net", "pid", "uts"], "{run}");
    for step in [
        "pivot_root",
        "capabilities",
        "seccomp",
        "exec",
        "idmap",
        "hostname",
    ] {
        assert!(steps.iter().any(|s| s.name == step), "no {step} step in:\n{run}");
    }
    let mounts = steps.iter().filter(|s| s.name == "mount").count();
    assert!(mounts >= 10, "only {mounts} mount steps:\n{run}");
    let caps = steps.iter().find(|s| s.name == "capabilities").unwrap();
    assert!(caps.values.contains("CapEff=00000000a80425fb"), "{}", caps.values);
}

#[test]
fn without_trace_nothing_is_traced() {
    let home = Home::new();
    let out = home
        .command(&["run", "--mode", "container", "--", "true"])
        .output()
        .expect("the sandbox binary starts");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.lines().any(|l| l.starts_with("trace +")), "{stderr}");
}
