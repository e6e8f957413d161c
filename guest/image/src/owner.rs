//! Which process owns a staging directory: its pid and start time (field 22 of
//! `/proc/PID/stat`, clock ticks since boot), recorded in the file `owner` as `PID START\n` when
//! the directory is made. Together they identify the process even after its pid is reused, so
//! a directory whose owner is gone can be removed without racing a live import.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::ImageError;

/// The owner record's file name inside a staging directory.
pub(crate) const OWNER_FILE: &str = "owner";

/// A process, identified across pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub pid: u32,
    pub start: u64,
}

impl Owner {
    /// This process; `None` when /proc cannot tell its start time.
    pub(crate) fn me() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether the process still runs (exited, zombie, or a pid now used by another process:
    /// not alive).
    pub(crate) fn alive(&self) -> bool {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let Some((state, start)) = parse_stat(&stat) else {
            return false;
        };
        start == self.start && !matches!(state, "Z" | "X" | "x")
    }

    /// Writes the record into `dir` (through a temporary name, so it is read whole or not at all).
    pub(crate) fn record(&self, dir: &Path) -> Result<(), ImageError> {
        let tmp = dir.join(".owner.tmp");
        let mut file = fs::File::create(&tmp).map_err(ImageError::io_at("cannot create", &tmp))?;
        writeln!(file, "{} {}", self.pid, self.start).map_err(ImageError::io_at("cannot write", &tmp))?;
        let path = dir.join(OWNER_FILE);
        fs::rename(&tmp, &path).map_err(ImageError::io_at("cannot rename to", &path))
    }

    /// The record in `dir`; `None` when it is missing or unreadable.
    pub(crate) fn read(dir: &Path) -> Option<Owner> {
        let text = fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
        let mut fields = text.split_whitespace();
        let owner = Owner {
            pid: fields.next()?.parse().ok()?,
            start: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(owner)
    }
}

/// The start time of `pid` (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, start)| start)
}

/// The state (field 3) and start time (field 22) of a /proc/PID/stat line. The command name
/// (field 2) may hold spaces and parentheses: fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_command_name() {
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_stat(line), Some(("S", 987654)));
    }

    #[test]
    fn this_process_is_alive_and_its_record_reads_back() {
        let me = Owner::me().unwrap();
        assert!(me.alive());
        assert!(
            !Owner {
                start: me.start + 1,
                ..me
            }
            .alive(),
            "a reused pid is not the owner"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Owner::read(dir.path()), None);
        me.record(dir.path()).unwrap();
        assert_eq!(Owner::read(dir.path()), Some(me));
        fs::write(dir.path().join(OWNER_FILE), "garbage").unwrap();
        assert_eq!(Owner::read(dir.path()), None);
    }
}
