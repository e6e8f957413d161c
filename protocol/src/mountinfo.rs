//! `/proc/PID/mountinfo` (see proc(5)), parsed once for everyone who reads it: the guest's
//! `info` workload and init, the container launcher's run-directory clean-up, the cgroup layout
//! probe and `sandbox doctor`.

use std::fs;
use std::io;

/// One line of a mountinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The path inside the filesystem that is mounted (a bind mount's or cgroup's subtree).
    pub root: String,
    /// Where it is mounted.
    pub target: String,
    /// The per-mount options (`rw,nosuid,...`).
    pub options: String,
    /// The optional fields (`shared:1 master:2`), space-separated; empty when none.
    pub propagation: String,
    pub fstype: String,
    pub source: String,
    /// The superblock options (for a v1 cgroup mount, its controllers).
    pub super_options: String,
}

impl MountEntry {
    /// Whether the per-mount options contain `option` (`ro`, `nosuid`, ...).
    pub fn has_option(&self, option: &str) -> bool {
        self.options.split(',').any(|o| o == option)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match octal {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of a mountinfo file; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let head: Vec<&str> = head.split(' ').collect();
            let mut tail = tail.split(' ');
            Some(MountEntry {
                root: unescape(head.get(3)?),
                target: unescape(head.get(4)?),
                options: head.get(5)?.to_string(),
                propagation: head.get(6..).map(|f| f.join(" ")).unwrap_or_default(),
                fstype: tail.next()?.to_string(),
                source: unescape(tail.next()?),
                super_options: tail.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// The mounts of process `pid` (`"self"` for this one).
pub fn read(pid: &str) -> io::Result<Vec<MountEntry>> {
    Ok(parse(&fs::read_to_string(format!("/proc/{pid}/mountinfo"))?))
}

/// This process's mounts, or `None` without /proc.
pub fn current() -> Option<Vec<MountEntry>> {
    read("self").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_optional_fields_and_escapes() {
        let text =
            "36 35 98:0 / /mnt/a\\040b rw,noatime shared:1 master:2 - ext4 /dev/vdc rw,errors=remount-ro\n\
                    37 35 0:30 /sandbox/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\nbroken\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, "/mnt/a b");
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[0].source, "/dev/vdc");
        assert_eq!(m[0].propagation, "shared:1 master:2");
        assert!(m[0].has_option("noatime") && !m[0].has_option("ro"));
        assert_eq!(m[1].root, "/sandbox/x");
        assert_eq!(m[1].propagation, "");
        assert_eq!(m[1].super_options, "rw,memory");
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn this_process_has_a_root_mount() {
        let mounts = current().expect("/proc is mounted");
        assert!(mounts.iter().any(|m| m.target == "/"));
    }
}
