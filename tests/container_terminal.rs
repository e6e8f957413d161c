//! `sandbox run -t` and `-i` in container mode, driven the way a person at a terminal drives
//! them: the launcher runs in a session of its own on a pseudo-terminal this test holds, keys
//! are written to the terminal's master and the screen read back from it.
//!
//! Needs root, busybox-static and a built workspace (`cargo build --workspace`).

mod container_support;

use container_support::{eventually, Home, SANDBOX};
use nix::sys::termios::{tcgetattr, Termios};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A launcher on a terminal this test holds.
struct Session {
    master: std::fs::File,
    screen: Receiver<Vec<u8>>,
    seen: String,
    child: Child,
    /// The terminal's side the launcher has, to compare its modes before and after.
    slave: OwnedFd,
    before: Termios,
}

fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize, which `ws` is.
    assert_eq!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
}

impl Session {
    fn start(home: &Home, args: &[&str]) -> Session {
        let pty = nix::pty::openpty(None, None).expect("a pty");
        set_size(&pty.master, 24, 80);
        let before = tcgetattr(&pty.slave).unwrap();
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut command = Command::new(SANDBOX);
        command
            .args(["run", "--mode", "container"])
            .args(args)
            .env("SANDBOX_HOME", home.path())
            .env("TERM", "xterm-test")
            .stdin(io(&pty.slave))
            .stdout(io(&pty.slave))
            .stderr(io(&pty.slave));
        // SAFETY: between fork and exec only async-signal-safe calls: setsid and ioctl.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("the sandbox binary starts");
        let mut reader = std::fs::File::from(pty.master.try_clone().unwrap());
        let (tx, screen) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Session {
            master: std::fs::File::from(pty.master),
            screen,
            seen: String::new(),
            child,
            slave: pty.slave,
            before,
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Reads the screen until `needle` appears after what was already consumed; returns the text
    /// up to and including it.
    fn expect(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.seen.find(needle) {
                let upto: String = self.seen.drain(..at + needle.len()).collect();
                return upto;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.screen.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!(
                    "{needle:?} did not appear within {within:?}; the screen shows:\n{}",
                    self.seen
                ),
            }
        }
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        assert!(
            eventually(Duration::from_secs(20), || child.try_wait().unwrap().is_some()),
            "the launcher did not end; the screen shows:\n{}",
            self.seen
        );
        self.child.wait().unwrap()
    }

    /// The launcher's terminal is in the modes it had before (raw mode undone).
    fn assert_restored(&self) {
        let after = tcgetattr(&self.slave).unwrap();
        assert_eq!(
            after.local_flags, self.before.local_flags,
            "local modes not restored"
        );
        assert_eq!(
            after.input_flags, self.before.input_flags,
            "input modes not restored"
        );
        assert_eq!(
            after.output_flags, self.before.output_flags,
            "output modes not restored"
        );
    }
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
    let mut s = Session::start(&home, &["-it", "--", "sh"]);
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
    let mut s = Session::start(&home, &["-it", "--", "sh"]);
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
