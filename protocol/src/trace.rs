//! `sandbox run --trace`: one stderr line per real step of the launcher, as it happens.
//!
//! Line format (machine-greppable, shared with the VMM's trace):
//!
//! ```text
//! trace +<µs since the launcher started> <step>: <values> (<duration> µs)
//! ```
//!
//! The switch is process-wide ([`enable`]), so the call sites deep in the cgroup, mount,
//! capability and VMM code need no extra parameter; the container's first process inherits it with its
//! copy of the launcher's memory. When tracing is off a step costs one relaxed atomic load: the
//! values are built by a closure that is then never called.
//!
//! Each line is written with a single `write(2)` on descriptor 2, so the launcher's and the
//! first process's lines never mix within a line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Nanoseconds on the machine-wide monotonic clock: the one clock of every trace line and phase
/// timing, so a reading taken in a container's first process, the launcher or the VMM can be
/// compared with any other.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is. CLOCK_MONOTONIC cannot fail on
    // Linux; were it to, the zero reading would only make a timing look odd.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static START_NS: AtomicU64 = AtomicU64::new(0);

/// The prefix every trace line starts with.
pub const PREFIX: &str = "trace +";

/// Turns tracing on for this process (and the container processes it creates from now on);
/// `start_ns` is the launcher's start (a [`now_ns`] reading), the zero of the timestamps.
pub fn enable(start_ns: u64) {
    START_NS.store(start_ns, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether `--trace` is on.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The current [`now_ns`] reading when tracing is on, 0 otherwise (no clock read when off).
#[inline]
pub fn start() -> u64 {
    if enabled() {
        now_ns()
    } else {
        0
    }
}

/// Records a step that began at `began_ns` (from [`start`]) and ends now; `values` is called
/// only when tracing is on.
#[inline]
pub fn step(name: &str, began_ns: u64, values: impl FnOnce() -> String) {
    if enabled() {
        let end = now_ns();
        emit(&format_line(
            START_NS.load(Ordering::Relaxed),
            end,
            name,
            &values(),
            end.saturating_sub(began_ns),
        ));
    }
}

/// Records an instantaneous step (an observation rather than an action), now.
#[inline]
pub fn note(name: &str, values: impl FnOnce() -> String) {
    if enabled() {
        let now = now_ns();
        step(name, now, values);
    }
}

/// One trace line (with its newline) for step `name` ending at `end_ns` after `duration_ns`.
pub fn format_line(start_ns: u64, end_ns: u64, name: &str, values: &str, duration_ns: u64) -> String {
    // Values never span lines: a multi-line value (a uid_map) is joined with " | ".
    let values = values.trim_end().replace('\n', " | ");
    format!(
        "{PREFIX}{} {name}: {values} ({} µs)\n",
        end_ns.saturating_sub(start_ns) / 1000,
        duration_ns / 1000
    )
}

fn emit(line: &str) {
    let mut bytes = line.as_bytes();
    while !bytes.is_empty() {
        // SAFETY: write(2) on descriptor 2 reads `bytes.len()` bytes from a live slice. A closed
        // or broken stderr only loses the trace.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        } else {
            return;
        }
    }
}

/// One parsed trace line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// Microseconds since the launcher started.
    pub at_us: u64,
    pub step: String,
    pub values: String,
    pub duration_us: u64,
}

/// Parses a line printed by [`step`]; `None` for any other line.
pub fn parse(line: &str) -> Option<TraceLine> {
    let rest = line.trim_end().strip_prefix(PREFIX)?;
    let (at, rest) = rest.split_once(' ')?;
    let (step, rest) = rest.split_once(": ")?;
    let rest = rest.strip_suffix(" µs)")?;
    let (values, duration) = rest.rsplit_once(" (")?;
    Some(TraceLine {
        at_us: at.parse().ok()?,
        step: step.to_string(),
        values: values.to_string(),
        duration_us: duration.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let line = format_line(1_000, 2_501_000, "cgroup.write", "/a/b (x) = 5", 42_000);
        assert_eq!(line, "trace +2500 cgroup.write: /a/b (x) = 5 (42 µs)\n");
        let parsed = parse(&line).unwrap();
        assert_eq!(parsed.at_us, 2500);
        assert_eq!(parsed.step, "cgroup.write");
        assert_eq!(parsed.values, "/a/b (x) = 5");
        assert_eq!(parsed.duration_us, 42);
    }

    #[test]
    fn multi_line_values_stay_on_one_line() {
        let line = format_line(0, 0, "idmap", "0 0 1\n5 5 1\n", 0);
        assert_eq!(line.lines().count(), 1);
        assert_eq!(parse(&line).unwrap().values, "0 0 1 | 5 5 1");
    }

    #[test]
    fn other_lines_are_not_trace_lines() {
        assert_eq!(parse("sandbox: error"), None);
        assert_eq!(parse("trace +x step: v (1 µs)"), None);
    }
}
