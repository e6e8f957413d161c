//! Progress lines on stderr for the slow steps (downloading, unpacking, building, booting), each
//! with its elapsed time.

use std::time::Instant;

/// Prints `lab: <step>…` when a step starts and `lab: <step>: done in N s` when it ends.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
}

/// One running step; [`Step::done`] prints its elapsed time.
#[derive(Debug)]
pub struct Step<'a> {
    progress: &'a Progress,
    what: String,
    start: Instant,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress { enabled }
    }

    /// Prints a one-off note.
    pub fn note(&self, msg: &str) {
        if self.enabled {
            eprintln!("lab: {msg}");
        }
    }

    /// Starts a step and says so.
    pub fn step(&self, what: impl Into<String>) -> Step<'_> {
        let what = what.into();
        if self.enabled {
            eprintln!("lab: {what}...");
        }
        Step {
            progress: self,
            what,
            start: Instant::now(),
        }
    }
}

impl Step<'_> {
    /// Ends the step, printing its elapsed time (and an optional detail).
    pub fn done(self, detail: &str) {
        if self.progress.enabled {
            let secs = self.start.elapsed().as_secs_f64();
            let sep = if detail.is_empty() { "" } else { ", " };
            eprintln!("lab: {}: done in {secs:.1} s{sep}{detail}", self.what);
        }
    }
}
