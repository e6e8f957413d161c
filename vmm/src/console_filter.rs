//! The guest console as the workload's output: drops the kernel's own farewell line (`reboot:
//! Restarting system`, printed at emergency level after init reboots, so `quiet` keeps it), so
//! `sandbox run --mode vm` prints what the command printed and nothing else, like container
//! mode. Everything else passes through as it comes; only a partial line that could still become
//! a dropped line is held back until it is complete.

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
}

impl<W: Write> ConsoleFilter<W> {
    pub fn new(inner: W) -> Self {
        ConsoleFilter {
            inner,
            held: Vec::new(),
            passing: false,
        }
    }

    fn could_be_dropped(partial: &[u8]) -> bool {
        DROPPED_LINES
            .iter()
            .any(|l| l.as_bytes().starts_with(partial) || partial.starts_with(l.as_bytes()))
    }

    fn is_dropped(line: &[u8]) -> bool {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        DROPPED_LINES.iter().any(|l| l.as_bytes() == body)
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
                    if !Self::is_dropped(&self.held) {
                        self.inner.write_all(&self.held)?;
                    }
                    self.held.clear();
                } else if !Self::could_be_dropped(&self.held) {
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
        // A held partial line that never completed was not the farewell line after all.
        if !self.held.is_empty() && !Self::is_dropped(&self.held) {
            let _ = self.inner.write_all(&self.held);
        }
        let _ = self.inner.flush();
    }
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
}
