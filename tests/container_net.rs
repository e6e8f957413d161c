//! `--net host`: a veth pair on a private /30 with a TCP round trip to a server on the host;
//! the pair is gone afterwards.

mod container_support;

use container_support::{Home, SANDBOX};
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn net_host_reaches_a_server_on_the_host() {
    let home = Home::new();
    let guest = std::path::Path::new(SANDBOX).with_file_name("sandbox-guest");
    let port = free_port();
    // The guest program's own server, on the host, on every address (the /30's host end is
    // only known once the sandbox exists).
    let mut server = Command::new(&guest)
        .args(["net", "serve", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandbox-guest net serve starts");
    assert!(container_support::eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    // The default route points at the host end of the link.
    let script = format!(
        "ls /sys/class/net; gw=$(ip route | awk '/^default/ {{print $3}}'); \
         sandbox-guest net --addr $gw:{port} --seconds 1"
    );
    let run = home.run(&["--net", "host"], &["sh", "-c", &script]);
    let _ = server.kill();
    let _ = server.wait();
    run.expect(0);
    let mut lines = run.stdout.lines();
    assert_eq!(lines.next(), Some("eth0"), "{}", run.stdout);
    assert_eq!(lines.next(), Some("lo"), "{}", run.stdout);
    let result: serde_json::Value =
        serde_json::from_str(lines.next().expect("the net workload's JSON line")).expect("JSON");
    assert_eq!(result["workload"], "net", "{result}");
    eprintln!("{result}");
    home.assert_no_leaks(run.id());
}

#[test]
fn without_net_host_the_host_is_unreachable() {
    let home = Home::new();
    let run = home.run(&[], &["sh", "-c", "ip route | wc -l"]);
    run.expect(0);
    assert_eq!(run.stdout.trim(), "0", "no routes without --net host");
    home.assert_no_leaks(run.id());
}
