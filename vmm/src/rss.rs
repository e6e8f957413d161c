//! The VMM's own resident memory: the process's RSS from /proc/self/smaps, minus the mappings
//! that back guest memory (those pages are the guest's, whatever touched them).

/// Sums `Rss:` over the mappings in `smaps` that do not start inside any `excluded` host range
/// (`[start, end)`), in bytes.
pub fn rss_excluding(smaps: &str, excluded: &[(u64, u64)]) -> u64 {
    sandbox_protocol::smaps::parse(smaps)
        .iter()
        .filter(|m| !excluded.iter().any(|&(s, e)| m.start >= s && m.start < e))
        .map(|m| m.rss)
        .sum()
}

/// The calling process's RSS outside `excluded`, or 0 if /proc/self/smaps cannot be read.
pub fn current(excluded: &[(u64, u64)]) -> u64 {
    std::fs::read_to_string("/proc/self/smaps")
        .map(|s| rss_excluding(&s, excluded))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/sandbox
Size:               1024 kB
Rss:                 800 kB
Pss:                 800 kB
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:               40960 kB
7f0008000000-7f0008001000 rw-p 00000000 00:00 0
Rss:                   4 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  12 kB
";

    #[test]
    fn guest_ranges_are_left_out() {
        assert_eq!(rss_excluding(SAMPLE, &[]), (800 + 40960 + 4 + 12) * 1024);
        let guest = (0x7f00_0000_0000, 0x7f00_0800_0000);
        assert_eq!(rss_excluding(SAMPLE, &[guest]), (800 + 4 + 12) * 1024);
    }

    #[test]
    fn this_process_has_some_rss() {
        assert!(current(&[]) > 0);
    }
}
