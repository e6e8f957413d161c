//! `/proc/PID/smaps`, parsed once: the VMM subtracts its guest memory from its own RSS with it,
//! and the bench measures every sandbox's and peer's memory with it.

/// One mapping of smaps: its address range and what of it is resident, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub rss: u64,
    pub pss: u64,
}

impl Mapping {
    pub fn size(&self) -> u64 {
        self.end - self.start
    }
}

/// The mappings of smaps text, in its (address) order.
pub fn parse(smaps: &str) -> Vec<Mapping> {
    let kib = |rest: &str| -> u64 {
        rest.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        if let Some((start, end)) = range(line) {
            out.push(Mapping {
                start,
                end,
                rss: 0,
                pss: 0,
            });
        } else if let Some(last) = out.last_mut() {
            if let Some(r) = line.strip_prefix("Rss:") {
                last.rss = kib(r);
            } else if let Some(r) = line.strip_prefix("Pss:") {
                last.pss = kib(r);
            }
        }
    }
    out
}

/// The mappings of process `pid` (`"self"` for this one).
pub fn read(pid: &str) -> std::io::Result<Vec<Mapping>> {
    Ok(parse(&std::fs::read_to_string(format!("/proc/{pid}/smaps"))?))
}

/// `start-end` of an smaps mapping header line, parsed.
fn range(line: &str) -> Option<(u64, u64)> {
    let (a, b) = line.split_whitespace().next()?.split_once('-')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_hexdigit());
    if !hex(a) || !hex(b) {
        return None;
    }
    Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/sandbox
Size:               1024 kB
Rss:                 800 kB
Pss:                 400 kB
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:               40960 kB
VmFlags: rd wr mr mw me ac sd
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  12 kB
";

    #[test]
    fn mappings_carry_their_range_and_resident_sizes() {
        let maps = parse(SAMPLE);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[0].start, 0x55d0_c000_0000);
        assert_eq!((maps[0].rss, maps[0].pss), (800 * 1024, 400 * 1024));
        assert_eq!(maps[1].size(), 128 << 20);
        assert_eq!(maps[1].pss, 0, "no Pss line: zero");
        assert_eq!(maps[2].rss, 12 * 1024);
    }

    #[test]
    fn this_process_has_mappings() {
        assert!(read("self").unwrap().iter().any(|m| m.rss > 0));
    }
}
