//! Real veth pairs on this host (run as root), as `sandbox run --net host` makes them (the
//! launcher's veth, the core's address allocator): a process in its own network namespace gets
//! `eth0`, the host end gets its address, TCP works both ways across the link, and dropping the
//! owner or `remove_stale` deletes the link.
//!
//! The sandbox side is configured with `nsenter` (util-linux) and `ip` (iproute2), as init would
//! do from the plan; the host side is checked with `ip`.

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{geteuid, Pid};
use sandbox_container::net::{self, NetError};
use sandbox_core::container::host_link;
use sandbox_core::CoreError;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

fn require_root_and_tools() {
    assert!(
        geteuid().is_root(),
        "these tests create real network links: run them as root (sudo -E cargo test -p sandbox-core)"
    );
    for (tool, package) in [("ip", "iproute2"), ("nsenter", "util-linux")] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        assert!(found, "{tool} is not installed: run `apt-get install {package}`");
    }
}

fn test_id(name: &str) -> String {
    format!("t{}{name}", std::process::id())
}

/// `sleep 30` in a network namespace of its own. `spawn` returns after the exec, so the
/// namespace exists by then.
fn netns_child() -> Child {
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    // SAFETY: unshare(2) is a single async-signal-safe syscall; nothing is allocated between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| unshare(CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from));
    }
    cmd.spawn().expect("spawn sleep in a new network namespace")
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_links() -> String {
    run("ip", &["-o", "link", "show"])
}

fn has_link(name: &str) -> bool {
    host_links().lines().any(|l| {
        l.split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next() == Some(name))
            == Some(true)
    })
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_host_and_the_sandbox_reach_each_other_over_tcp() {
    require_root_and_tools();
    let child = netns_child();
    let pid = pid_of(&child);
    let link = host_link(&test_id("tcp"), pid).unwrap();
    let host = link.host_address();
    let plan = link.guest_plan();
    eprintln!("link {} host {host}, plan {plan:?}", link.host_name());
    assert_eq!(plan.interface, "eth0");
    assert_eq!(plan.prefix_len, 30);
    assert_eq!(plan.gateway, Some(host));
    assert_eq!(u32::from(plan.address), u32::from(host) + 1);
    assert_eq!(host.octets()[..2], [10, 213]);
    assert!(has_link(link.host_name()), "{}", host_links());
    let host_addrs = run("ip", &["-o", "-4", "addr", "show", "dev", link.host_name()]);
    assert!(host_addrs.contains(&format!("{host}/30")), "{host_addrs}");
    assert!(
        host_links().contains(&format!("sandbox:{}", test_id("tcp"))) || {
            // Older iproute2 prints the alias only with -d.
            run("ip", &["-d", "link", "show", link.host_name()])
                .contains(&format!("sandbox:{}", test_id("tcp")))
        }
    );

    // What init does inside from the plan.
    let target = pid.as_raw().to_string();
    let guest_cidr = format!("{}/{}", plan.address, plan.prefix_len);
    run(
        "nsenter",
        &[
            "-t",
            &target,
            "-n",
            "ip",
            "addr",
            "add",
            &guest_cidr,
            "dev",
            "eth0",
        ],
    );
    run(
        "nsenter",
        &["-t", &target, "-n", "ip", "link", "set", "eth0", "up"],
    );

    // Sandbox -> host: a thread enters the namespace and connects to a listener on the host end.
    let listener = TcpListener::bind((host, 0)).unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let guest_addr = plan.address;
    let (port_tx, port_rx) = mpsc::channel();
    let inside = std::thread::spawn(move || {
        let ns = File::open(format!("/proc/{target}/ns/net")).unwrap();
        setns(ns, CloneFlags::CLONE_NEWNET).unwrap();
        let mut out = TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(host), host_port), TIMEOUT)
            .expect("connect from the sandbox to the host address");
        out.write_all(b"from sandbox").unwrap();
        drop(out);
        // Host -> sandbox: listen on the guest address for one connection.
        let inner = TcpListener::bind((guest_addr, 0)).unwrap();
        port_tx.send(inner.local_addr().unwrap().port()).unwrap();
        let (mut conn, peer) = inner.accept().unwrap();
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        (got, peer)
    });

    listener.set_nonblocking(false).unwrap();
    let (mut conn, peer) = listener.accept().unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "from sandbox");
    assert_eq!(peer.ip(), IpAddr::V4(guest_addr));

    let guest_port = port_rx.recv_timeout(TIMEOUT).unwrap();
    let mut out = TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(guest_addr), guest_port), TIMEOUT)
        .expect("connect from the host to the sandbox address");
    out.write_all(b"from host").unwrap();
    drop(out);
    let (got, peer) = inside.join().unwrap();
    assert_eq!(got, "from host");
    assert_eq!(peer.ip(), IpAddr::V4(host));

    let name = link.host_name().to_string();
    drop(link);
    assert!(
        !has_link(&name),
        "{name} still there after drop:\n{}",
        host_links()
    );
    kill(child);
}

#[test]
fn remove_stale_deletes_a_leftover_link_found_by_its_alias() {
    require_root_and_tools();
    // Longer than a 15-character interface name allows: the name is hashed, the alias keeps the id.
    let id = test_id("-leftover-with-a-long-id");
    let child = netns_child();
    let link = host_link(&id, pid_of(&child)).unwrap();
    let name = link.host_name().to_string();
    assert!(name.len() <= 15 && name.starts_with("sbx"), "{name}");
    std::mem::forget(link);
    assert!(has_link(&name));
    assert!(net::list_ids().contains(&id), "{:?}", net::list_ids());

    net::remove_stale(&id).unwrap();
    assert!(!has_link(&name), "{name} still there:\n{}", host_links());
    assert!(!net::list_ids().contains(&id));
    net::remove_stale(&id).unwrap();
    kill(child);
}

#[test]
fn a_second_link_for_the_same_id_is_refused_and_the_first_keeps_working() {
    require_root_and_tools();
    let id = test_id("dup");
    let first_child = netns_child();
    let second_child = netns_child();
    let link = host_link(&id, pid_of(&first_child)).unwrap();
    match host_link(&id, pid_of(&second_child)) {
        Err(e @ CoreError::Net(NetError::Exists { .. })) => {
            assert!(e.to_string().contains("sandbox gc"), "{e}")
        }
        other => panic!("expected Exists, got {other:?}"),
    }
    assert!(has_link(link.host_name()));
    link.remove().unwrap();
    kill(first_child);
    kill(second_child);
}

#[test]
fn two_sandboxes_get_different_subnets() {
    require_root_and_tools();
    let (a, b) = (netns_child(), netns_child());
    let la = host_link(&test_id("a"), pid_of(&a)).unwrap();
    let lb = host_link(&test_id("b"), pid_of(&b)).unwrap();
    eprintln!(
        "{} {}, {} {}",
        la.host_name(),
        la.host_address(),
        lb.host_name(),
        lb.host_address()
    );
    assert_ne!(
        u32::from(la.host_address()) & !3,
        u32::from(lb.host_address()) & !3
    );
    drop((la, lb));
    kill(a);
    kill(b);
}

#[test]
fn a_gone_process_is_reported_and_nothing_is_left() {
    require_root_and_tools();
    let mut child = Command::new("true").spawn().unwrap();
    let pid = pid_of(&child);
    child.wait().unwrap();
    let id = test_id("gone");
    match host_link(&id, pid) {
        Err(e @ CoreError::Net(NetError::ChildGone { .. })) => assert!(e.to_string().contains("gone"), "{e}"),
        other => panic!("expected ChildGone, got {other:?}"),
    }
    assert!(!has_link(&net::host_name_for(&id)));
}
