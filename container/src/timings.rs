//! Phase timestamps across the launcher and the container's first process.
//!
//! Both read `CLOCK_MONOTONIC`, which is one clock for the whole machine, so the child can send
//! raw readings through its status pipe and the launcher turns them into microseconds since its
//! own start.

use sandbox_spec::Timing;

use sandbox_protocol::trace::now_ns;

/// The phases reached so far, relative to the launcher's start.
#[derive(Debug, Clone)]
pub struct Timeline {
    start_ns: u64,
    timings: Vec<Timing>,
}

impl Timeline {
    /// Starts a timeline at `start_ns` (a [`now_ns`] reading taken when the launcher started).
    pub fn new(start_ns: u64) -> Timeline {
        Timeline {
            start_ns,
            timings: vec![Timing {
                phase: sandbox_spec::phase::LAUNCHER_START.to_string(),
                micros: 0,
            }],
        }
    }

    /// Records `phase` at the monotonic reading `at_ns`.
    pub fn mark_at(&mut self, phase: &str, at_ns: u64) {
        self.timings.push(Timing {
            phase: phase.to_string(),
            micros: at_ns.saturating_sub(self.start_ns) / 1000,
        });
    }

    /// Records `phase` now.
    pub fn mark(&mut self, phase: &str) {
        self.mark_at(phase, now_ns());
    }

    pub fn into_timings(self) -> Vec<Timing> {
        self.timings
    }
}
