//! Runs every workload natively on this host with short durations and checks its one JSON line.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-guest");
const ALL_WORKLOADS: [&str; 7] = ["ready", "info", "cpu", "mem", "disk", "net", "syscall"];

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SANDBOX_READY")
        .output()
        .expect("run sandbox-guest")
}

/// The single JSON line a successful workload printed.
fn json_line(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line, got: {stdout}");
    assert!(stdout.ends_with('\n'));
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lines[0]))
}

fn positive(v: &Value, field: &str) -> f64 {
    let x = v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing or not a number in {v}"));
    assert!(x > 0.0, "{field} = {x} is not > 0 in {v}");
    x
}

fn assert_usage_error(out: &Output) {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for w in ALL_WORKLOADS {
        assert!(stderr.contains(&format!("  {w} ")), "usage lacks {w}: {stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn cpu_reports_ops_and_rate() {
    let v = json_line(&run(&["cpu", "--seconds", "0.2"]));
    assert_eq!(v["workload"], "cpu");
    assert!(positive(&v, "seconds") >= 0.2);
    positive(&v, "ops");
    positive(&v, "ops_per_second");
    assert!(v["op"].as_str().is_some_and(|s| s.contains("rounds")));
}

#[test]
fn mem_touches_every_page() {
    let v = json_line(&run(&["mem", "--mib", "8"]));
    assert_eq!(v["workload"], "mem");
    assert_eq!(v["mib"], 8);
    assert_eq!(v["pages_touched"], 8 * 256);
    positive(&v, "mib_per_second");
    assert!(v["seconds"].is_number());
}

#[test]
fn syscall_reports_both_phases() {
    let v = json_line(&run(&["syscall", "--seconds=0.2"]));
    assert_eq!(v["workload"], "syscall");
    for phase in ["getpid", "write_64_bytes_dev_null"] {
        positive(&v[phase], "calls");
        positive(&v[phase], "calls_per_second");
        positive(&v[phase], "ns_per_call");
    }
}

#[test]
fn disk_measures_all_phases_and_removes_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["disk", "--path", dir.path().to_str().unwrap(), "--mib", "8"]);
    let v = json_line(&out);
    assert_eq!(v["workload"], "disk");
    assert_eq!(v["mib"], 8);
    for phase in ["sequential_write", "sequential_read"] {
        assert_eq!(v[phase]["bytes"], 8 << 20);
        positive(&v[phase], "mib_per_second");
    }
    assert!(v["sequential_read"]["direct"].is_boolean());
    for phase in ["random_read_4k", "random_write_4k"] {
        positive(&v[phase], "iops");
        positive(&v[phase], "ops");
        assert!(v[phase]["direct"].is_boolean());
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the test file was left behind"
    );
}

#[test]
fn disk_refuses_a_missing_directory() {
    let out = run(&["disk", "--path", "/nonexistent/sandbox-guest-test"]);
    assert_usage_error(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/sandbox-guest-test"));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the server when the test ends, also on failure.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn net_client_measures_against_net_serve() {
    let port = free_port().to_string();
    let mut server = Server(
        Command::new(BIN)
            .args(["net", "serve", "--port", &port, "--bind", "127.0.0.1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(listening["workload"], "net-serve");
    assert_eq!(listening["listening"], format!("127.0.0.1:{port}"));

    let v = json_line(&run(&[
        "net",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--seconds",
        "0.4",
    ]));
    assert_eq!(v["workload"], "net");
    positive(&v["stream"], "bytes");
    positive(&v["stream"], "mbit_per_second");
    let rr = &v["request_response"];
    positive(rr, "transactions_per_second");
    let p50 = positive(rr, "latency_p50_us");
    let p99 = positive(rr, "latency_p99_us");
    let max = positive(rr, "latency_max_us");
    assert!(p50 <= p99 && p99 <= max, "{rr}");
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the server must keep serving"
    );
}

#[test]
fn net_client_names_the_refused_address() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = run(&["net", "--addr", &addr, "--seconds", "0.2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr) && stderr.contains("refused"), "{stderr}");
}

#[test]
fn ready_writes_a_line_to_the_inherited_fd() {
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let fd = write_end.as_raw_fd();
    let out = Command::new(BIN)
        .arg("ready")
        .env("SANDBOX_READY", format!("fd:{fd}"))
        .output()
        .unwrap();
    drop(write_end);
    let v = json_line(&out);
    assert_eq!(v["workload"], "ready");
    assert_eq!(v["channel"], format!("fd:{fd}"));
    // Read only the line itself: other tests' children may hold the write end a while longer.
    let mut got = [0u8; 6];
    std::fs::File::from(read_end).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ready\n");
}

#[test]
fn ready_without_a_channel_is_a_usage_error() {
    let out = run(&["ready"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SANDBOX_READY"));
    let out = Command::new(BIN)
        .arg("ready")
        .env("SANDBOX_READY", "none")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ready_on_a_closed_fd_fails_with_status_1() {
    let out = Command::new(BIN)
        .arg("ready")
        .env("SANDBOX_READY", "fd:987")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("fd:987"));
}

#[test]
fn unknown_workloads_and_bad_arguments_print_the_usage() {
    assert_usage_error(&run(&["no-such-workload"]));
    assert_usage_error(&run(&[]));
    assert_usage_error(&run(&["cpu", "--seconds", "soon"]));
    assert_usage_error(&run(&["cpu", "--seconds", "-1"]));
    assert_usage_error(&run(&["cpu", "--minutes", "1"]));
    assert_usage_error(&run(&["mem"]));
    assert_usage_error(&run(&["mem", "--mib", "0"]));
    assert_usage_error(&run(&["net", "serve"]));
    assert_usage_error(&run(&["net", "--addr", "nowhere", "--seconds", "0.1"]));
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for w in ALL_WORKLOADS {
        assert!(text.contains(&format!("  {w} ")), "--help lacks {w}: {text}");
    }
}

#[test]
fn info_describes_this_host() {
    let v = json_line(&run(&["info"]));
    let uname = Command::new("uname")
        .arg("-r")
        .output()
        .expect("uname (coreutils) is needed");
    assert_eq!(v["kernel_release"], String::from_utf8_lossy(&uname.stdout).trim());
    assert!(v["pid"].as_u64().unwrap() > 0);
    let ns = v["namespaces"].as_object().expect("namespaces");
    for name in ["pid", "mnt", "net", "uts"] {
        let id = ns[name]
            .as_str()
            .unwrap_or_else(|| panic!("namespace {name} missing: {ns:?}"));
        assert!(id.starts_with(&format!("{name}:[")), "{id}");
    }
    let cgroup = &v["cgroup"];
    assert!(
        ["v1", "v2", "hybrid"].contains(&cgroup["version"].as_str().unwrap()),
        "{cgroup}"
    );
    for key in ["memory_limit_bytes", "pids_max", "cpu_quota_us", "cpu_period_us"] {
        assert!(cgroup.get(key).is_some(), "cgroup.{key} missing: {cgroup}");
    }
    let mounts = v["mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["target"] == "/" && m["fstype"].is_string()),
        "no / in {mounts:?}"
    );
    assert!(v["cpus"]["online"].as_u64().unwrap() >= 1);
    assert!(v["memory"]["total_kib"].as_u64().unwrap() > 0);
    assert!(v["block_devices"].is_array());
    let nets = v["net_devices"].as_array().unwrap();
    let lo = nets.iter().find(|n| n["name"] == "lo").expect("lo listed");
    assert!(
        lo["ipv4"].as_array().unwrap().iter().any(|a| a == "127.0.0.1/8"),
        "{lo}"
    );
    assert!(lo["mtu"].as_u64().unwrap() > 0);
}
