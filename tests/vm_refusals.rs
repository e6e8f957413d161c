//! `sandbox run --mode vm` refusing what it cannot run, natively on this host (no lab): each bad
//! input is one line on stderr naming the input and the fix, status 125, and nothing is left in
//! `$SANDBOX_HOME` (the refusals come before the image store, the run directory or any disk).
//! On this CI host /dev/kvm is PVM, so the plain run must be refused with the PVM message.
//!
//! The memory and vCPU cases check against the built guest kernel (`sandbox kernel build`).

use std::path::Path;
use std::process::Command;

use sandbox_vmm::kvm_kind::{self, KvmKind};

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

struct Refusal {
    status: i32,
    stderr: String,
}

/// Runs `sandbox ARGS` with a fresh `$SANDBOX_HOME` and checks it stays empty.
fn run(args: &[&str]) -> Refusal {
    run_with(args, &[])
}

fn run_with(args: &[&str], env: &[(&str, &Path)]) -> Refusal {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(SANDBOX);
    cmd.args(args).env("SANDBOX_HOME", home.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the sandbox binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("sandbox {}: {}\n{stderr}", args.join(" "), out.status);
    let left: Vec<_> = walk(home.path());
    assert!(left.is_empty(), "nothing may be left behind, found {left:?}");
    Refusal {
        status: out.status.code().unwrap_or(-1),
        stderr,
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

fn assert_one_line(r: &Refusal, status: i32, needles: &[&str]) {
    assert_eq!(r.status, status, "{}", r.stderr);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "one line: {}", r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "{n:?} missing from: {}", r.stderr);
    }
}

fn built_kernel() -> String {
    sandbox_kernel::cached()
        .expect("the guest kernel is not built: run `sandbox kernel build`")
        .vmlinux
        .display()
        .to_string()
}

#[test]
fn this_host_runs_vm_mode_or_refuses_it_naming_why_and_the_way_out() {
    built_kernel();
    match kvm_kind::detect() {
        KvmKind::Pvm => {
            let r = run(&["run", "--mode", "vm", "--", "true"]);
            assert_one_line(
                &r,
                125,
                &[
                    "PVM",
                    "a standard kernel cannot run here",
                    "sandbox lab -- run --mode vm",
                    "--kernel",
                ],
            );
            // A standard kernel tried anyway (`--kernel` allows it) fails at once with the
            // crash status and the same hint, and leaves no run directory or tap behind.
            let home = tempfile::tempdir().unwrap();
            let out = Command::new(SANDBOX)
                .args(["run", "--mode", "vm", "--kernel", &built_kernel(), "--", "true"])
                .env("SANDBOX_HOME", home.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprintln!("{stderr}");
            assert_eq!(
                out.status.code(),
                Some(sandbox_vmm::CRASH_EXIT_STATUS),
                "{stderr}"
            );
            assert!(
                stderr.contains("PVM") && stderr.contains("sandbox lab"),
                "{stderr}"
            );
            let run_dir = home.path().join("run");
            assert!(walk(&run_dir).is_empty(), "{:?}", walk(&run_dir));
        }
        KvmKind::Absent => assert_one_line(
            &run(&["run", "--mode", "vm", "--", "true"]),
            125,
            &["/dev/kvm does not exist"],
        ),
        KvmKind::NoPermission => assert_one_line(
            &run(&["run", "--mode", "vm", "--", "true"]),
            125,
            &["/dev/kvm cannot be opened"],
        ),
        kind @ (KvmKind::Hardware { .. } | KvmKind::Unknown) => {
            // A host that can boot it must boot it (and clean up after itself).
            let home = tempfile::tempdir().unwrap();
            let out = Command::new(SANDBOX)
                .args(["run", "--mode", "vm", "--", "true"])
                .env("SANDBOX_HOME", home.path())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{kind:?}: {out:?}");
            let run_dir = home.path().join("run");
            assert!(walk(&run_dir).is_empty(), "{:?}", walk(&run_dir));
        }
    }
}

#[test]
fn no_built_kernel_says_sandbox_kernel_build() {
    let cache = tempfile::tempdir().unwrap();
    let r = run_with(
        &["run", "--mode", "vm", "--", "true"],
        &[("SANDBOX_CACHE", cache.path())],
    );
    assert_one_line(&r, 125, &["not built", "sandbox kernel build", "--kernel"]);
}

#[test]
fn a_kernel_file_that_is_neither_bzimage_nor_elf_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("not-a-kernel");
    std::fs::write(&bogus, "just text\n").unwrap();
    let bogus = bogus.display().to_string();
    let r = run(&["run", "--mode", "vm", "--kernel", &bogus, "--", "true"]);
    assert_one_line(&r, 125, &[&bogus, "neither a bzImage nor an ELF"]);
    let r = run(&["run", "--mode", "vm", "--kernel", "/nonexistent/vmlinux"]);
    assert_one_line(&r, 125, &["/nonexistent/vmlinux", "no such file"]);
}

#[test]
fn memory_and_cpus_outside_what_the_kernel_and_host_allow_are_refused() {
    built_kernel();
    let r = run(&["run", "--mode", "vm", "--memory", "8M", "--", "true"]);
    assert_one_line(&r, 125, &["--memory 8 MiB", "at least"]);
    let r = run(&["run", "--mode", "vm", "--memory", "64T", "--", "true"]);
    assert_one_line(&r, 125, &["more than this host has"]);
    // More than is free now, though less than the host has: the guest would push the host
    // into its OOM killer.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let available_mib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("MemAvailable in /proc/meminfo")
        / 1024;
    let more = format!("{}M", available_mib + 512);
    let r = run(&["run", "--mode", "vm", "--memory", &more, "--", "true"]);
    assert_one_line(&r, 125, &["available now", "MemAvailable"]);
    let r = run(&["run", "--mode", "vm", "--cpus", "1000", "--", "true"]);
    assert_one_line(&r, 125, &["--cpus 1000", "more than this host has"]);
    let r = run(&["run", "--mode", "vm", "--cpus", "1.5", "--", "true"]);
    assert_one_line(&r, 125, &["--cpus 1.5", "whole number"]);
    let r = run(&["run", "--mode", "vm", "--pids", "5", "--", "true"]);
    assert_one_line(&r, 125, &["--pids", "VM mode"]);
}

#[test]
fn vm_only_flags_are_refused_in_container_mode() {
    for flag in [
        &["--kernel", "/k"][..],
        &["--cmdline-extra", "quiet"],
        &["--keep-disk"],
    ] {
        let mut args = vec!["run", "--mode", "container"];
        args.extend_from_slice(flag);
        args.extend_from_slice(&["--", "true"]);
        let r = run(&args);
        assert_one_line(&r, 1, &[flag[0], "--mode vm"]);
    }
}
