//! `sandbox explain container`: the summary is built from the real run — the trace streams to
//! stderr, the host's view shows the launcher with the guest program below it in its own PID
//! namespace, and the kernel the sandbox reports is the host's own release.
//!
//! Needs root and busybox-static, like the other container tests (see container_support).

mod container_support;

use container_support::Home;

#[test]
fn explain_container_shows_a_process_tree_on_the_hosts_kernel() {
    let home = Home::new();
    let out = home
        .command(&["explain", "container"])
        .output()
        .expect("the sandbox binary starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let traced = stderr.lines().filter(|l| l.starts_with("trace +")).count();
    assert!(
        traced > 20,
        "the run's trace is streamed ({traced} lines):\n{stderr}"
    );
    // The summary's step count is the trace's.
    assert!(
        stdout.contains(&format!("set-up ({traced} traced steps)")),
        "{stdout}"
    );

    let release = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    assert!(stdout.contains(&format!("host kernel:    {release}")), "{stdout}");
    assert!(
        stdout.contains(&format!("sandbox kernel: {release} (the host's)")),
        "a container runs on the host's kernel:\n{stdout}"
    );

    // The host sees processes: the launcher, and under it the guest program in its own PID
    // namespace (a real pid of this host).
    let view: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("the host sees:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(view[0].trim_start().starts_with("sandbox pid "), "{view:#?}");
    let guest = view
        .iter()
        .find(|l| l.trim_start().starts_with("sandbox-guest pid "))
        .unwrap_or_else(|| panic!("no sandbox-guest process in the host's view: {view:#?}"));
    assert!(guest.contains("own PID ns"), "{guest}");
    let pid: i32 = guest.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        pid > 1,
        "the host sees the container's PID 1 under a host pid: {guest}"
    );
}
