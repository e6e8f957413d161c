//! `sandbox-runtime` driven as containerd and podman drive it: create, start, state, kill,
//! delete, run, exec, pause/resume, a terminal over a console socket, the pid file and the JSON
//! log — and every bad input refused in one line, leaving no state behind.

mod oci_support;

use oci_support::{test_id, Bundle, Runtime};
use std::time::Duration;

#[test]
fn the_lifecycle_creates_starts_signals_and_deletes_leaving_nothing() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&[
        "sh",
        "-c",
        "trap 'echo got-term; exit 3' TERM; echo started; while true; do sleep 0.1; done",
    ]);
    let id = test_id("life");
    let out = bundle.path().join("out");
    let pid_file = bundle.path().join("pid");
    let file = std::fs::File::create(&out).unwrap();
    let status = rt
        .command(&[
            "create",
            "--bundle",
            bundle.path().to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
        ])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&out).unwrap());
    let state = rt.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["bundle"], bundle.path().to_str().unwrap());
    // Digits only: clients parse it with Atoi.
    let pid_text = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid_text, state["pid"].to_string());
    assert!(
        !std::fs::read_to_string(&out).unwrap().contains("started"),
        "the process waits for start"
    );

    rt.run(&["start", &id]).ok();
    rt.wait_status(&id, "running", Duration::from_secs(5));
    // Reading the state twice must not disturb the container.
    rt.state(&id);
    let ps = rt.run(&["ps", "--format", "json", &id]);
    let pids: Vec<i32> = serde_json::from_str(ps.ok().stdout.trim()).unwrap();
    assert!(pids.contains(&pid_text.parse().unwrap()), "{pids:?}");
    rt.run(&["start", &id]).refused(&["already running"]);
    rt.run(&["delete", &id]).refused(&[&id, "not stopped", "--force"]);

    rt.run(&["pause", &id]).ok();
    assert_eq!(rt.state(&id)["status"], "paused");
    rt.run(&["resume", &id]).ok();
    assert_eq!(rt.state(&id)["status"], "running");

    rt.run(&["kill", &id, "TERM"]).ok();
    rt.wait_status(&id, "stopped", Duration::from_secs(5));
    assert_eq!(rt.state(&id)["pid"], 0);
    rt.run(&["kill", &id, "KILL"]).refused(&["not running"]);
    rt.run(&["kill", "--all", &id, "KILL"]).ok();
    rt.run(&["delete", &id]).ok();
    let output = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        output, "started\ngot-term\n",
        "the container's stdout is create's"
    );
    rt.assert_gone(&id);
    // The id is free again.
    rt.run(&["state", &id]).refused(&["does not exist"]);
    rt.run(&["delete", "--force", &id]).ok();
}

#[test]
fn run_exits_with_the_process_status_and_deletes_it() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    let id = test_id("run");
    let r = rt.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(r.code, 7, "{r:?}");
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    rt.assert_gone(&id);
}

#[test]
fn config_fields_reach_the_process() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&[
        "sh",
        "-c",
        "echo $(hostname) $(id -u):$(id -g) $(id -G) $(pwd) $GREETING; cat /proc/self/oom_score_adj; ulimit -n; cat /proc/sys/net/ipv4/ip_forward; grep CapEff /proc/self/status",
    ]);
    bundle.edit(|c| {
        c["hostname"] = "boxname".into();
        c["process"]["user"] = serde_json::json!({"uid": 10, "gid": 20, "additionalGids": [5]});
        c["process"]["cwd"] = "/tmp".into();
        c["process"]["env"] = serde_json::json!(["PATH=/bin", "GREETING=hello"]);
        c["process"]["oomScoreAdj"] = 300.into();
        c["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512}]);
        c["process"]["capabilities"] = serde_json::json!({
            "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
            "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]
        });
        c["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        c["root"]["readonly"] = false.into();
    });
    let id = test_id("fields");
    let r = rt.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "boxname 10:20 20 5 /tmp hello", "{}", r.stdout);
    assert_eq!(lines[1], "300");
    assert_eq!(lines[2], "512");
    assert_eq!(lines[3], "1");
    // CAP_KILL (5) survives the change to uid 10 through the ambient set.
    assert!(lines[4].ends_with("0000000000000020"), "{}", lines[4]);
    rt.assert_gone(&id);
}

#[test]
fn bad_input_is_one_line_and_leaves_no_state() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["true"]);
    let b = bundle.path().to_str().unwrap().to_string();
    let id = test_id("bad");
    let config = bundle.path().join("config.json");
    let good = std::fs::read_to_string(&config).unwrap();

    std::fs::write(&config, "{ not json").unwrap();
    rt.run(&["create", "--bundle", &b, &id]).refused(&["config.json"]);
    std::fs::write(&config, good.replace("\"uid\": 0", "\"uid\": \"root\"")).unwrap();
    rt.run(&["create", "--bundle", &b, &id])
        .refused(&["process.user.uid"]);
    std::fs::write(
        &config,
        good.replace("\"ociVersion\": \"1.1.0\"", "\"ociVersion\": \"2.0.0\""),
    )
    .unwrap();
    rt.run(&["create", "--bundle", &b, &id])
        .refused(&["2.0.0", "1.x"]);
    std::fs::write(
        &config,
        good.replace("\"path\": \"rootfs\"", "\"path\": \"nowhere\""),
    )
    .unwrap();
    rt.run(&["create", "--bundle", &b, &id]).refused(&["nowhere"]);
    std::fs::write(&config, &good).unwrap();
    rt.run(&["create", "--bundle", "relative/bundle", &id])
        .refused(&["relative"]);
    rt.run(&["create", "--bundle", &b, "a/b"])
        .refused(&["invalid sandbox id"]);
    rt.run(&["create", "--bundle", &b, ".."])
        .refused(&["invalid sandbox id"]);
    rt.run(&["start", "nope"]).refused(&["does not exist"]);
    rt.run(&["kill", "nope"]).refused(&["does not exist"]);
    rt.run(&["delete", "nope"]).refused(&["does not exist"]);
    for bad in ["create", "start", "state", "kill", "delete"] {
        assert_ne!(rt.run(&[bad]).code, 0, "{bad} without an id");
    }
    assert!(
        std::fs::read_dir(rt.root.path()).map(|d| d.count()).unwrap_or(0) == 0,
        "state left behind"
    );

    // A duplicate id is refused without touching the first container.
    let out = bundle.path().join("out");
    rt.create(&bundle, &id, &out).ok();
    rt.create(&bundle, &id, &bundle.path().join("out2"))
        .refused(&["already exists"]);
    assert_eq!(rt.state(&id)["status"], "created");
    rt.run(&["kill", &id, "NOSUCHSIG"]).refused(&["NOSUCHSIG"]);
    rt.run(&["start", &id]).ok();
    rt.wait_status(&id, "stopped", Duration::from_secs(5));
    rt.run(&["start", &id]).refused(&["stopped"]);
    rt.run(&["delete", &id]).ok();
    rt.assert_gone(&id);
}

#[test]
fn a_created_container_killed_with_sigkill_stops_and_deletes() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "30"]);
    let id = test_id("killcreated");
    rt.create(&bundle, &id, &bundle.path().join("out")).ok();
    rt.run(&["delete", &id]).refused(&["created", "--force"]);
    rt.run(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", Duration::from_secs(5));
    rt.run(&["delete", &id]).ok();
    rt.assert_gone(&id);
    // --force deletes a running one.
    rt.create(&bundle, &id, &bundle.path().join("out")).ok();
    rt.run(&["start", &id]).ok();
    rt.run(&["delete", "--force", &id]).ok();
    rt.assert_gone(&id);
}

#[test]
fn exec_runs_in_the_containers_namespaces_with_its_status() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "30"]);
    bundle.edit(|c| c["hostname"] = "execbox".into());
    let id = test_id("exec");
    rt.create(&bundle, &id, &bundle.path().join("out")).ok();
    rt.run(&["start", &id]).ok();
    let r = rt.run(&["exec", &id, "sh", "-c", "echo $(hostname) $$; exit 4"]);
    assert_eq!(r.code, 4, "{r:?}");
    let words: Vec<&str> = r.stdout.split_whitespace().collect();
    assert_eq!(words[0], "execbox");
    assert_ne!(words[1], "1", "a process beside PID 1, in its PID namespace");
    // The OCI process JSON conmon and containerd's shim pass, detached with a pid file.
    let process = bundle.path().join("process.json");
    std::fs::write(
        &process,
        r#"{"args": ["sleep", "5"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]}"#,
    )
    .unwrap();
    let pid_file = bundle.path().join("exec.pid");
    // Detached, its stdio is not this test's pipes (a reader of those would wait for it).
    let status = rt
        .command(&[
            "exec",
            "--process",
            process.to_str().unwrap(),
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let ps = rt.run(&["ps", "--format", "json", &id]);
    assert!(
        ps.stdout.contains(&pid.to_string()),
        "exec'd process is in the container's cgroup: {}",
        ps.stdout
    );
    rt.run(&["exec", &id, "no-such-command"])
        .refused(&["no-such-command"]);
    rt.run(&["delete", "--force", &id]).ok();
    rt.assert_gone(&id);
    rt.run(&["exec", &id, "true"]).refused(&["does not exist"]);
}

#[test]
fn errors_go_to_a_json_log_as_containerd_reads_them() {
    let rt = Runtime::new();
    let log = rt.root.path().join("log.json");
    let r = rt.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "missing",
    ]);
    assert_ne!(r.code, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains("does not exist"), "{last}");
    assert!(last["time"].as_str().unwrap().ends_with('Z'), "RFC 3339: {last}");
    let r = rt.run(&["--systemd-cgroup", "state", "x"]);
    assert!(r.stderr.contains("cgroupfs"), "{}", r.stderr);
}

#[test]
fn a_terminal_goes_to_the_console_socket_as_conmon_expects() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sh", "-c", "tty; read line; echo got $line"]);
    bundle.edit(|c| c["process"]["terminal"] = true.into());
    let socket = bundle.path().join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let id = test_id("tty");
    let r = rt.run(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--console-socket",
        socket.to_str().unwrap(),
        &id,
    ]);
    r.ok();
    let (stream, _) = listener.accept().unwrap();
    let mut buf = [0u8; 64];
    let mut fds = [0; 1];
    let (n, received) = recv_fd(&stream, &mut buf, &mut fds);
    assert_eq!(&buf[..n], b"/dev/ptmx");
    assert_eq!(received, 1, "one SCM_RIGHTS descriptor");
    // SAFETY: the descriptor was just received and belongs to nobody else.
    let mut master: std::fs::File = unsafe { std::os::fd::FromRawFd::from_raw_fd(fds[0]) };
    rt.run(&["start", &id]).ok();
    master.write_all(b"hi\n").unwrap();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("got hi") && std::time::Instant::now() < deadline {
        let n = master.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        seen.contains("/dev/pts/"),
        "the process's stdin is a pty: {seen:?}"
    );
    assert!(seen.contains("got hi"), "{seen:?}");
    rt.wait_status(&id, "stopped", Duration::from_secs(5));
    rt.run(&["delete", &id]).ok();
    rt.assert_gone(&id);
}

/// Receives one message and its descriptors.
fn recv_fd(stream: &std::os::unix::net::UnixStream, buf: &mut [u8], fds: &mut [i32]) -> (usize, usize) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
    let mut count = 0;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(r) = c {
            for (i, fd) in r.iter().enumerate() {
                fds[i] = *fd;
                count += 1;
            }
        }
    }
    (msg.bytes, count)
}

#[test]
fn ambient_capabilities_that_cannot_be_raised_are_left_out_as_runc_does() {
    // `runc spec` lists ambient capabilities but no inheritable set: they cannot be raised, and
    // the container must run regardless.
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sh", "-c", "grep CapAmb /proc/self/status"]);
    bundle.edit(|c| {
        c["process"]["capabilities"] = serde_json::json!({
            "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
            "ambient": ["CAP_KILL"]
        });
    });
    let id = test_id("ambient");
    let r = rt.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
    r.ok();
    assert!(r.stdout.contains("0000000000000000"), "{}", r.stdout);
    rt.assert_gone(&id);
}
