//! The phase timeline of one sandbox: readings of the machine-wide monotonic clock
//! ([`sandbox_protocol::trace::now_ns`]) from the launcher, the container's first process or the
//! VMM, turned into microseconds since the launcher started.

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
