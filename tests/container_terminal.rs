//! `sandbox run -t` and `-i` in container mode, driven the way a person at a terminal drives
//! them: the launcher runs in a session of its own on a pseudo-terminal this test holds, keys
//! are written to the terminal's master and the screen read back from it.
//!
//! Needs root, busybox-static and a built workspace (`cargo build --workspace`).

mod container_support;
mod terminal_support;

use container_support::{eventually, Home, SANDBOX};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use terminal_support::{set_size, Session};

/// `sandbox run --mode container ARGS` on a terminal, with `home`.
fn session(home: &Home, args: &[&str]) -> Session {
    let full: Vec<&str> = ["run", "--mode", "container"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    Session::start(SANDBOX, &full, &[("SANDBOX_HOME", home.path().as_os_str())])
}

/// The one sandbox of `home` while it runs.
fn only_id(home: &Home) -> String {
    let mut id = None;
    assert!(eventually(Duration::from_secs(10), || {
        id = std::fs::read_dir(home.run_dir())
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned());
        id.is_some()
    }));
    id.unwrap()
}

#[test]
fn an_interactive_shell_gets_keys_size_resizes_and_ctrl_c() {
    let home = Home::new();
    let mut s = session(&home, &["-it", "--", "sh"]);
    s.expect("# ", Duration::from_secs(20));
    let id = only_id(&home);
    s.type_keys("tty; stty size; echo term=$TERM\r");
    s.expect("/dev/pts/0", Duration::from_secs(10));
    s.expect("24 80", Duration::from_secs(10));
    s.expect("term=xterm-test", Duration::from_secs(10));
    // The host terminal is resized: the launcher hears SIGWINCH and resizes the sandbox's.
    set_size(&s.master, 30, 100);
    let mut resized = false;
    for _ in 0..50 {
        s.type_keys("stty size\r");
        let shown = s.expect("# ", Duration::from_secs(10));
        if shown.contains("30 100") {
            resized = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(resized, "the sandbox's terminal never became 30x100");
    // Ctrl-C is a key to the sandbox's terminal: it interrupts the foreground job only.
    s.type_keys("sleep 30\r");
    std::thread::sleep(Duration::from_millis(500));
    let began = Instant::now();
    s.type_keys("\x03");
    s.type_keys("echo after-$((6*7))\r");
    s.expect("after-42", Duration::from_secs(10));
    assert!(began.elapsed() < Duration::from_secs(10));
    s.type_keys("exit 3\r");
    let status = s.wait();
    assert_eq!(status.code(), Some(3), "{status:?}; screen:\n{}", s.seen);
    s.assert_restored();
    home.assert_no_leaks(&id);
}

#[test]
fn a_hang_up_ends_the_session_and_restores_the_terminal() {
    let home = Home::new();
    let mut s = session(&home, &["-it", "--", "sh"]);
    s.expect("# ", Duration::from_secs(20));
    let id = only_id(&home);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let status = s.wait();
    // The shell ends on the forwarded hang-up: 128 + SIGHUP.
    assert_eq!(
        status.code(),
        Some(129),
        "{status:?} (signal {:?})",
        status.signal()
    );
    s.assert_restored();
    home.assert_no_leaks(&id);
}

#[test]
fn a_terminal_without_input_still_is_the_commands_terminal() {
    let home = Home::new();
    let run = home.run(&["-t"], &["sh", "-c", "tty; test -t 0 && echo stdin-tty"]);
    run.expect(0);
    assert!(run.stdout.contains("/dev/pts/0"), "{:?}", run.stdout);
    assert!(run.stdout.contains("stdin-tty"), "{:?}", run.stdout);
    home.assert_no_leaks(run.id());
}

/// `sandbox run FLAGS -- cat` with "piped\n" on stdin; returns what cat printed.
fn cat_with(home: &Home, flags: &[&str]) -> String {
    let mut child = home
        .command(&[&["run", "--mode", "container"], flags, &["--", "cat"]].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"piped\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn stdin_reaches_the_command_only_with_i() {
    let home = Home::new();
    assert_eq!(cat_with(&home, &["-i"]), "piped\n");
    assert_eq!(cat_with(&home, &[]), "", "without -i the command reads /dev/null");
}

#[test]
fn it_without_a_terminal_on_stdin_is_refused() {
    let home = Home::new();
    let out = home
        .command(&["run", "--mode", "container", "-it", "--", "sh"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("-t with -i needs a terminal on stdin"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
