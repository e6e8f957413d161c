//! `sandbox explain vm|container|compare`: runs the default workload (`sandbox-guest info`) in
//! the chosen mode(s) with `--trace`, samples what the host sees while it runs, and prints a
//! short side-by-side of what each mode had to set up and what the host saw.
//!
//! Every figure comes from the run: the set-up summary from its trace lines, the phases from its
//! outcome, the host's view from `/proc` (the launcher's process tree and threads), the kernel
//! releases from `uname` here and the workload's own report inside. Nothing is canned: a mode
//! that fails shows its error instead.

use anyhow::Context;
use sandbox_protocol::trace::{self, TraceLine};
use sandbox_spec::DEFAULT_IMAGE;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EXAMPLES: &str = "\
Examples:
  sandbox explain container                  trace + summary of one container run
  sandbox lab -- explain compare             both modes side by side (VM mode needs hardware KVM;
                                             on a PVM host, run it in the lab)";

/// Which sandbox(es) to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// A KVM microVM.
    Vm,
    /// A namespace container.
    Container,
    /// Both, side by side.
    Compare,
}

/// Run the default workload with --trace and explain what each mode set up and what the host saw.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// vm, container, or compare (both).
    #[arg(value_enum)]
    what: What,
    /// Image from the store.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// How long the workload stays up after `info`, so the host's view can be sampled.
    #[arg(long, default_value = "1", value_name = "SECS")]
    hold: u32,
}

/// One process of the sandbox as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostProcess {
    pid: i32,
    ppid: i32,
    comm: String,
    threads: Vec<String>,
    /// Whether its PID namespace differs from this process's.
    own_pid_ns: bool,
}

/// What one `sandbox run --trace` showed.
struct Observed {
    mode: &'static str,
    status: i32,
    steps: Vec<TraceLine>,
    /// stderr lines that are not trace lines (errors, boot messages of a VM).
    other: Vec<String>,
    info: Option<Value>,
    outcome: Option<Value>,
    host_view: Vec<HostProcess>,
    wall: Duration,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let modes: &[&'static str] = match args.what {
        What::Vm => &["vm"],
        What::Container => &["container"],
        What::Compare => &["container", "vm"],
    };
    let mut observed = Vec::new();
    for mode in modes {
        eprintln!("sandbox explain: running the default workload in a {mode} with --trace...");
        observed.push(observe(mode, &args)?);
    }
    let columns: Vec<Vec<String>> = observed.iter().map(summary).collect();
    print!("{}", side_by_side(&columns, 60));
    Ok(if observed.iter().all(|o| o.status == 0) {
        0
    } else {
        1
    })
}

/// The run's `--outcome` file, removed when dropped.
struct OutcomeFile(PathBuf);

impl Drop for OutcomeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `sandbox run --mode MODE --trace -- sh -c 'sandbox-guest info; sleep HOLD'`, echoing
/// its stderr, and samples the host's view of it while it runs.
fn observe(mode: &'static str, args: &Args) -> anyhow::Result<Observed> {
    let exe = std::env::current_exe().context("finding the sandbox binary")?;
    let outcome_file =
        OutcomeFile(std::env::temp_dir().join(format!("sandbox-explain-{}-{mode}.json", std::process::id())));
    let script = format!("sandbox-guest info; sleep {}", args.hold);
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .args([
            "run",
            "--mode",
            mode,
            "--trace",
            "--image",
            &args.image,
            "--outcome",
        ])
        .arg(&outcome_file.0)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id() as i32;
    let stdout = child.stdout.take().context("the run's stdout")?;
    let stderr = child.stderr.take().context("the run's stderr")?;
    // The host's view is sampled from the moment the workload printed its `info` (it then holds
    // for `--hold` seconds), so it shows the sandbox running, not being built or torn down.
    let running = Arc::new(AtomicBool::new(false));
    let out_reader = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"workload\":\"info\"") {
                    running.store(true, Ordering::Relaxed);
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    };
    let err_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            lines.push(line);
        }
        lines
    });
    let done = Arc::new(AtomicBool::new(false));
    // (sampled while running?, the richest view then)
    let best = Arc::new(Mutex::new((false, Vec::<HostProcess>::new())));
    let sampler = {
        let (done, best, running) = (done.clone(), best.clone(), running.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let during = running.load(Ordering::Relaxed);
                let view = host_view(pid);
                let weight = |v: &[HostProcess]| v.iter().map(|p| 1 + p.threads.len()).sum::<usize>();
                if let Ok(mut best) = best.lock() {
                    // A view taken while the workload runs beats any taken before.
                    if (during && !best.0) || (during == best.0 && weight(&view) > weight(&best.1)) {
                        *best = (during, view);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let status = child.wait().context("waiting for the run")?;
    let wall = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let (steps, other): (Vec<_>, Vec<_>) = stderr.iter().partition(|l| trace::parse(l).is_some());
    let outcome = std::fs::read_to_string(&outcome_file.0)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let host_view = best.lock().map(|v| v.1.clone()).unwrap_or_default();
    Ok(Observed {
        mode,
        status: status.code().unwrap_or(128),
        steps: steps.iter().filter_map(|l| trace::parse(l)).collect(),
        other: other.into_iter().cloned().collect(),
        info: find_info(&stdout),
        outcome,
        host_view,
        wall,
    })
}

/// The `info` workload's JSON object in `stdout` (a VM's console may surround it).
fn find_info(stdout: &str) -> Option<Value> {
    stdout.lines().find_map(|line| {
        let start = line.find('{')?;
        let value: Value = serde_json::from_str(line[start..].trim()).ok()?;
        (value.get("workload")? == "info").then_some(value)
    })
}

/// The process `root` and its descendants, with their threads, from /proc.
fn host_view(root: i32) -> Vec<HostProcess> {
    let my_pid_ns = std::fs::read_link("/proc/self/ns/pid").ok();
    let mut all: Vec<(i32, i32, String)> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let Some(ppid) = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        all.push((pid, ppid, comm));
    }
    let mut keep = vec![root];
    let mut view = Vec::new();
    // Parents come before children in a breadth-first walk from the root.
    let mut i = 0;
    while i < keep.len() {
        let pid = keep[i];
        if let Some((_, ppid, comm)) = all.iter().find(|(p, _, _)| *p == pid) {
            let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    let mut t: Vec<(i32, String)> = d
                        .flatten()
                        .filter_map(|e| {
                            let tid = e.file_name().to_str()?.parse().ok()?;
                            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
                            Some((tid, name.trim().to_string()))
                        })
                        .collect();
                    t.sort();
                    t.into_iter().map(|(_, n)| n).collect()
                })
                .unwrap_or_default();
            let pid_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            view.push(HostProcess {
                pid,
                ppid: *ppid,
                comm: comm.clone(),
                threads,
                own_pid_ns: pid_ns.is_some() && pid_ns != my_pid_ns,
            });
        }
        keep.extend(all.iter().filter(|(_, pp, _)| *pp == pid).map(|(p, _, _)| *p));
        i += 1;
    }
    view
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// One mode's column: set-up steps, phases, host view, kernel and hardware seen.
fn summary(o: &Observed) -> Vec<String> {
    let mut lines = vec![
        format!(
            "== {} (exit {}, {:.2} s wall) ==",
            o.mode,
            o.status,
            o.wall.as_secs_f64()
        ),
        String::new(),
    ];
    if o.status != 0 && o.info.is_none() {
        // It never ran the workload: what it said is the whole story.
        lines.push("the run failed before the workload ran:".into());
        lines.extend(o.other.iter().rev().take(3).rev().cloned());
        if o.mode == "vm" {
            lines.push("(where only the lab has a usable KVM: `sandbox lab -- explain vm`)".into());
        }
        return lines;
    }
    lines.push(format!("set-up ({} traced steps):", o.steps.len()));
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for s in &o.steps {
        let g = groups.entry(s.step.as_str()).or_insert_with(|| {
            order.push(s.step.as_str());
            (0, 0)
        });
        g.0 += 1;
        g.1 += s.duration_us;
    }
    for name in order {
        let (count, us) = groups[name];
        lines.push(format!("  {name:<18} x{count:<3} {:>10}", ms(us)));
    }
    if let Some(phases) = o
        .outcome
        .as_ref()
        .and_then(|v| v.get("timings"))
        .and_then(Value::as_array)
    {
        lines.push(String::new());
        lines.push("phases (since launcher start):".into());
        for p in phases {
            if let (Some(name), Some(us)) = (p["phase"].as_str(), p["micros"].as_u64()) {
                lines.push(format!("  {name:<18} {:>10}", ms(us)));
            }
        }
    }
    lines.push(String::new());
    lines.push("the host sees:".into());
    for p in &o.host_view {
        let depth = depth_of(&o.host_view, p);
        let ns = if p.own_pid_ns { ", own PID ns" } else { "" };
        lines.push(format!(
            "  {}{} pid {} ({} thread{}{ns})",
            "  ".repeat(depth),
            p.comm,
            p.pid,
            p.threads.len(),
            if p.threads.len() == 1 { "" } else { "s" }
        ));
        let named: Vec<&String> = p.threads.iter().filter(|t| **t != p.comm).collect();
        if !named.is_empty() {
            let list: Vec<&str> = named.iter().map(|s| s.as_str()).collect();
            lines.push(format!("  {}  threads: {}", "  ".repeat(depth), list.join(" ")));
        }
    }
    if o.host_view.is_empty() {
        lines.push("  (ended before it could be sampled)".into());
    }
    lines.push(String::new());
    let host_release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    lines.push(format!("host kernel:    {host_release}"));
    match &o.info {
        Some(info) => {
            let release = info["kernel_release"].as_str().unwrap_or("?");
            let whose = if release == host_release {
                "the host's"
            } else {
                "its own"
            };
            lines.push(format!("sandbox kernel: {release} ({whose})"));
            lines.push(format!(
                "cpus {} ({}), memory {} MiB",
                info["cpus"]["online"],
                info["cpus"]["model_name"].as_str().unwrap_or("?"),
                info["memory"]["total_kib"].as_u64().unwrap_or(0) / 1024
            ));
            let names = |key: &str| -> String {
                info[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|d| d["name"].as_str())
                            .filter(|n| !n.starts_with("loop") && !n.starts_with("zram"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default()
            };
            lines.push(format!("block devices: {}", names("block_devices")));
            lines.push(format!("net devices:   {}", names("net_devices")));
        }
        None => lines.push("sandbox kernel: ? (no info output)".into()),
    }
    if o.status != 0 {
        lines.push(String::new());
        lines.extend(o.other.iter().rev().take(3).rev().cloned());
    }
    lines
}

fn depth_of(view: &[HostProcess], p: &HostProcess) -> usize {
    let mut depth = 0;
    let mut ppid = p.ppid;
    while let Some(parent) = view.iter().find(|q| q.pid == ppid) {
        depth += 1;
        ppid = parent.ppid;
        if depth > 32 {
            break;
        }
    }
    depth
}

/// Lays `columns` out next to each other, each `width` characters wide (longer lines cut).
fn side_by_side(columns: &[Vec<String>], width: usize) -> String {
    if columns.len() == 1 {
        return columns[0].iter().map(|l| format!("{l}\n")).collect();
    }
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = String::new();
    for row in 0..rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                let cell: String = c
                    .get(row)
                    .map(String::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(width)
                    .collect();
                format!("{cell:<width$}")
            })
            .collect();
        out.push_str(cells.join(" | ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_and_cut_to_width() {
        let out = side_by_side(&[vec!["abc".into(), "0123456789".into()], vec!["x".into()]], 5);
        assert_eq!(out, "abc   | x\n01234 |\n");
    }

    #[test]
    fn the_info_object_is_found_among_console_lines() {
        let stdout = "[    1.0] booting\n{\"workload\":\"info\",\"kernel_release\":\"6.1\"}\nbye\n";
        assert_eq!(find_info(stdout).unwrap()["kernel_release"], "6.1");
        assert!(find_info("{\"workload\":\"cpu\"}\n").is_none());
    }

    #[test]
    fn the_host_view_of_this_process_lists_its_child_and_threads() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let _thread_alive = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(500)));
        let me = std::process::id() as i32;
        let view = host_view(me);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(view[0].pid, me);
        assert!(view[0].threads.len() >= 2, "{view:?}");
        let sleeper = view
            .iter()
            .find(|p| p.pid == child.id() as i32)
            .expect("the child is listed");
        assert_eq!(sleeper.comm, "sleep");
        assert_eq!(depth_of(&view, sleeper), 1);
        assert!(!sleeper.own_pid_ns);
    }
}
