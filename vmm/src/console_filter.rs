//! The guest console as the workload's output: drops the kernel's own farewell line (`reboot:
//! Restarting system`, printed at emergency level after init reboots, so `quiet` keeps it), so
//! `sandbox run --mode vm` prints what the command printed and nothing else, like container
//! mode. With `--trace` the kernel boots verbose with `printk.time=1`, and its timestamped lines
//! (`[    0.123456] ...`) become `guest.console` trace lines instead of output. Everything else
//! passes through as it comes; only a partial line that could still become a dropped or traced
//! line is held back until it is complete.

use std::io::{self, Write};

/// Whole console lines the kernel prints on a normal VM ending.
pub const DROPPED_LINES: &[&str] = &["reboot: Restarting system"];

/// A writer that forwards to `inner` all but [`DROPPED_LINES`].
pub struct ConsoleFilter<W: Write> {
    inner: W,
    /// The current line's start, held back while it may still become a dropped line.
    held: Vec<u8>,
    /// Whether the current line's start was already forwarded (so it cannot be dropped).
    passing: bool,
    /// Route the kernel's timestamped lines to the trace.
    trace_kernel: bool,
}

impl<W: Write> ConsoleFilter<W> {
    pub fn new(inner: W) -> Self {
        ConsoleFilter {
            inner,
            held: Vec::new(),
            passing: false,
            trace_kernel: false,
        }
    }

    /// Also sends the kernel's timestamped lines to the trace (`guest.console`) instead of on.
    pub fn tracing_kernel_lines(mut self) -> Self {
        self.trace_kernel = true;
        self
    }

    fn could_be_dropped(&self, partial: &[u8]) -> bool {
        DROPPED_LINES
            .iter()
            .any(|l| l.as_bytes().starts_with(partial) || partial.starts_with(l.as_bytes()))
            || (self.trace_kernel && could_be_kernel_line(partial))
    }

    /// Forwards, drops or traces one complete line.
    fn finish_line(&mut self, line: &[u8]) -> io::Result<()> {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if DROPPED_LINES.iter().any(|l| l.as_bytes() == body) {
            return Ok(());
        }
        if self.trace_kernel && is_kernel_line(body) {
            sandbox_protocol::trace::note("guest.console", || String::from_utf8_lossy(body).into_owned());
            return Ok(());
        }
        self.inner.write_all(line)
    }
}

impl<W: Write> Write for ConsoleFilter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let (chunk, line_end) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[chunk.len()..];
            if self.passing {
                self.inner.write_all(chunk)?;
            } else {
                self.held.extend_from_slice(chunk);
                if line_end {
                    let line = std::mem::take(&mut self.held);
                    self.finish_line(&line)?;
                } else if !self.could_be_dropped(&self.held) {
                    self.inner.write_all(&self.held)?;
                    self.held.clear();
                    self.passing = true;
                }
            }
            if line_end {
                self.passing = false;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for ConsoleFilter<W> {
    fn drop(&mut self) {
        // A held partial line that never completed is finished as it is.
        let line = std::mem::take(&mut self.held);
        if !line.is_empty() {
            let _ = self.finish_line(&line);
        }
        let _ = self.inner.flush();
    }
}

/// Whether `line` starts with a printk timestamp, `[ SECONDS.MICROS] `.
fn is_kernel_line(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"[") else {
        return false;
    };
    let Some(end) = rest.iter().position(|&b| b == b']') else {
        return false;
    };
    let stamp = rest[..end].trim_ascii_start();
    let Some(dot) = stamp.iter().position(|&b| b == b'.') else {
        return false;
    };
    dot > 0
        && stamp[..dot].iter().all(u8::is_ascii_digit)
        && stamp.len() > dot + 1
        && stamp[dot + 1..].iter().all(u8::is_ascii_digit)
}

/// Whether a partial line could still turn out to be a timestamped kernel line.
fn could_be_kernel_line(partial: &[u8]) -> bool {
    let Some(rest) = partial.strip_prefix(b"[") else {
        return partial.is_empty();
    };
    if let Some(end) = rest.iter().position(|&b| b == b']') {
        return is_kernel_line(&partial[..end + 2]);
    }
    rest.iter().all(|&b| b == b' ' || b == b'.' || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(chunks: &[&str]) -> String {
        let mut out = Vec::new();
        {
            let mut f = ConsoleFilter::new(&mut out);
            for c in chunks {
                f.write_all(c.as_bytes()).unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_farewell_line_is_dropped_however_it_is_split() {
        assert_eq!(filtered(&["hello\nreboot: Restarting system\n"]), "hello\n");
        assert_eq!(
            filtered(&["hel", "lo\nreb", "oot: Restarting sys", "tem\r\n"]),
            "hello\n"
        );
    }

    #[test]
    fn everything_else_passes_including_look_alikes_and_partial_lines() {
        assert_eq!(
            filtered(&["reboot: Restarting system now\n"]),
            "reboot: Restarting system now\n"
        );
        assert_eq!(filtered(&["rebooting\n", "re"]), "rebooting\nre");
        assert_eq!(filtered(&["a  b \"c\"\n", "7"]), "a  b \"c\"\n7");
    }

    #[test]
    fn kernel_lines_are_told_from_workload_lines() {
        assert!(is_kernel_line(b"[    0.123456] Linux version 6.1"));
        assert!(is_kernel_line(b"[12345.000001] x"));
        assert!(!is_kernel_line(b"[a  b]"));
        assert!(!is_kernel_line(b"[1]"));
        assert!(!is_kernel_line(b"[.5] x"));
        assert!(could_be_kernel_line(b"[   0.12"));
        assert!(!could_be_kernel_line(b"[a"));
        assert!(!could_be_kernel_line(b"hello"));
    }

    #[test]
    fn with_tracing_kernel_lines_leave_the_output() {
        let mut out = Vec::new();
        {
            let mut f = ConsoleFilter::new(&mut out).tracing_kernel_lines();
            f.write_all(b"[    0.100000] Booting\n[a  b]\nhel").unwrap();
            f.write_all(b"lo\n[    1.0").unwrap();
            f.write_all(b"00000] reboot\n").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "[a  b]\nhello\n");
    }
}
