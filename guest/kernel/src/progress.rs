//! Progress on stderr while a long step runs: the phase, the elapsed time and (while compiling)
//! the number of objects compiled so far. On a terminal one line is redrawn in place at most
//! four times a second; otherwise a plain line is printed every 30 seconds.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the in-place line is redrawn.
pub const TICK: Duration = Duration::from_millis(250);
const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// The progress display of one builder run.
pub struct Progress {
    enabled: bool,
    tty: bool,
    phase_started: Instant,
    last_plain: Option<Instant>,
}

impl Progress {
    /// A display that draws only if `enabled`.
    pub fn new(enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
            phase_started: now,
            last_plain: None,
        }
    }

    /// Starts a new phase.
    pub fn phase(&mut self, name: &str) {
        self.phase_started = Instant::now();
        self.last_plain = None;
        self.update(name, None);
    }

    /// Redraws the line for `phase`, with an object count if there is one.
    pub fn update(&mut self, phase: &str, objects: Option<usize>) {
        if !self.enabled {
            return;
        }
        let line = self.line(phase, objects);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
        } else if self.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            self.last_plain = Some(Instant::now());
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the phase's line (on a terminal, the in-place line is kept).
    pub fn done(&mut self, phase: &str, objects: Option<usize>) {
        if !self.enabled {
            return;
        }
        let line = self.line(phase, objects);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = writeln!(err, "\r\x1b[K{line} done");
        } else {
            let _ = writeln!(err, "{line} done");
        }
    }

    fn line(&self, phase: &str, objects: Option<usize>) -> String {
        let secs = self.phase_started.elapsed().as_secs_f64();
        match objects {
            Some(n) => format!("kernel: {phase} {secs:6.1}s  {n} objects compiled"),
            None => format!("kernel: {phase} {secs:6.1}s"),
        }
    }
}
