//! Reading and writing cgroup control files, with errors that name the file.

use super::CgroupError;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `value` to a control file in one `write(2)`, as the kernel expects.
pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let began = sandbox_protocol::trace::start();
    fs::OpenOptions::new()
        .write(true)
        // Ignored by cgroupfs, as by `echo > file`; keeps the value whole on a plain file.
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Io {
            action: format!("write {value:?} to"),
            path: path.to_path_buf(),
            source,
        })?;
    sandbox_protocol::trace::step("cgroup.write", began, || format!("{} = {value}", path.display()));
    Ok(())
}

/// A control file holding one number; `None` when missing, unreadable or `max`.
pub(super) fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` per line: cpu.stat, memory.events,
/// memory.oom_control, pids.events).
pub(super) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The pids listed in a `cgroup.procs` file; an empty list when the cgroup is gone.
pub(super) fn read_pids(procs: &Path) -> io::Result<Vec<i32>> {
    match fs::read_to_string(procs) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
