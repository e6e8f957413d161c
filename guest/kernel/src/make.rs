//! Running one `make` step of an out-of-tree kernel build: output appended to the build log,
//! progress shown while it runs, and the end of the log in the error when it fails.

use crate::progress::{Progress, TICK};
use crate::KernelError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};

/// How many lines of the log a failure shows.
const TAIL_LINES: usize = 30;

/// Runs `make -C src O=build ARGS`, appending its output to `log`, showing `phase` meanwhile
/// (with a count of the objects compiled when `count_objects`).
pub fn run(
    src: &Path,
    build: &Path,
    args: &[String],
    log: &Path,
    phase: &str,
    count_objects: bool,
    progress: &mut Progress,
) -> Result<(), KernelError> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| KernelError::io("cannot open build log", log, e))?;
    let start = out.metadata().map(|m| m.len()).unwrap_or(0);
    let err = out
        .try_clone()
        .map_err(|e| KernelError::io("cannot open build log", log, e))?;
    let mut child = Command::new("make")
        .arg("-C")
        .arg(src)
        .arg(format!("O={}", build.display()))
        .args(args)
        .env("KBUILD_BUILD_USER", "sandbox")
        .env("KBUILD_BUILD_HOST", "sandbox")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| KernelError::io("cannot run make in", src, e))?;

    let mut counter = ObjectCounter::new(log, start);
    progress.phase(phase);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| KernelError::io("cannot wait for make in", src, e))?
        {
            break status;
        }
        let objects = count_objects.then(|| counter.poll());
        progress.update(phase, objects);
        std::thread::sleep(TICK);
    };
    let objects = count_objects.then(|| counter.poll());
    if !status.success() {
        progress.update(phase, objects);
        progress.done(phase, objects);
        return Err(KernelError::Make {
            step: args.join(" "),
            status: status
                .code()
                .map_or_else(|| status.to_string(), |c| c.to_string()),
            log: log.to_path_buf(),
            tail: tail(log, TAIL_LINES),
        });
    }
    progress.done(phase, objects);
    Ok(())
}

/// Counts kbuild's `  CC      path` lines appended to the log since a given offset.
struct ObjectCounter {
    file: Option<File>,
    count: usize,
    partial: String,
}

impl ObjectCounter {
    fn new(log: &Path, start: u64) -> Self {
        let file = File::open(log)
            .ok()
            .and_then(|mut f| f.seek(SeekFrom::Start(start)).ok().map(|_| f));
        ObjectCounter {
            file,
            count: 0,
            partial: String::new(),
        }
    }

    fn poll(&mut self) -> usize {
        let Some(file) = self.file.as_mut() else {
            return self.count;
        };
        let mut buf = Vec::new();
        if file.read_to_end(&mut buf).is_err() {
            return self.count;
        }
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let complete = match self.partial.rfind('\n') {
            Some(i) => i + 1,
            None => return self.count,
        };
        self.count += self.partial[..complete]
            .lines()
            .filter(|l| is_compile_line(l))
            .count();
        self.partial.drain(..complete);
        self.count
    }
}

/// Whether a kbuild output line reports compiling a C file (`  CC      kernel/fork.o`).
fn is_compile_line(line: &str) -> bool {
    line.strip_prefix("  CC")
        .is_some_and(|rest| rest.starts_with(' '))
}

/// The last `n` lines of `log` (empty if it cannot be read).
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cc_lines_count_as_compiled_objects() {
        assert!(is_compile_line("  CC      kernel/fork.o"));
        assert!(!is_compile_line("  CCM     x"));
        assert!(!is_compile_line("  LD      vmlinux"));
        assert!(!is_compile_line("  HOSTCC  scripts/basic/fixdep"));
    }

    #[test]
    fn the_counter_reads_only_complete_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "  CC      old.o\n").unwrap();
        let mut counter = ObjectCounter::new(&log, 16);
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut f, b"  CC      a.o\n  LD      b\n  CC      c").unwrap();
        assert_eq!(counter.poll(), 1);
        std::io::Write::write_all(&mut f, b".o\n").unwrap();
        assert_eq!(counter.poll(), 2);
    }
}
