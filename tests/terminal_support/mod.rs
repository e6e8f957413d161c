//! A program on a pseudo-terminal this test holds, driven as a person at a terminal drives it:
//! keys written to the terminal's master, the screen read back from it. Used by the `-t`/`-i`
//! tests of both modes.

#![allow(dead_code)] // each test file uses a different part of this module

use nix::sys::termios::{tcgetattr, Termios};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A launcher on a terminal this test holds.
pub struct Session {
    pub master: std::fs::File,
    screen: Receiver<Vec<u8>>,
    pub seen: String,
    pub child: Child,
    /// The terminal's side the launcher has, to compare its modes before and after.
    slave: OwnedFd,
    before: Termios,
}

pub fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) {
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
    /// Starts `program ARGS` (with `env`) in a session of its own whose controlling terminal,
    /// stdin, stdout and stderr are a new pty, 24x80.
    pub fn start(program: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Session {
        let pty = nix::pty::openpty(None, None).expect("a pty");
        set_size(&pty.master, 24, 80);
        let before = tcgetattr(&pty.slave).unwrap();
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
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

    pub fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Reads the screen until `needle` appears after what was already consumed; returns the text
    /// up to and including it.
    pub fn expect(&mut self, needle: &str, within: Duration) -> String {
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

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.wait_within(Duration::from_secs(20))
    }

    /// Waits at most `within` for the program to end.
    pub fn wait_within(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        assert!(
            eventually(within, || child.try_wait().unwrap().is_some()),
            "the program did not end; the screen shows:\n{}",
            self.seen
        );
        self.child.wait().unwrap()
    }

    /// The launcher's terminal is in the modes it had before (raw mode undone).
    pub fn assert_restored(&self) {
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

impl Drop for Session {
    /// A test that failed midway leaves no program running (the lab's QEMU dies with it).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `cond` every 20 ms for at most `within`.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}
