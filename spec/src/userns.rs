//! `--userns[=BASE]`: the host ids a container's user namespace maps its ids onto, so that its
//! root (uid 0 inside) is an unprivileged host user outside.
//!
//! Without a base, the range is the line for the user `sandbox` in `/etc/subuid` and
//! `/etc/subgid` (as `useradd` or `usermod --add-subuids` writes it: `sandbox:START:COUNT`), else
//! [`DEFAULT_BASE`]. Either way the container gets [`COUNT`] ids, 0 to 65535 inside, as Docker's
//! `userns-remap` does: root, the usual system users and groups, and `nobody` (65534).

use crate::SpecError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The user whose line in `/etc/subuid` and `/etc/subgid` names the range.
pub const SUBID_USER: &str = "sandbox";
/// The host uid and gid of the container's root when neither `--userns=BASE` nor a `sandbox`
/// line says otherwise (where `useradd` starts handing out subordinate ids is 100000; this stays
/// clear of those).
pub const DEFAULT_BASE: u32 = 1_000_000;
/// How many ids a container's user namespace maps: 0 to 65535 inside.
pub const COUNT: u32 = 65536;

/// Where the host's subordinate id ranges are listed.
pub const SUBUID_FILE: &str = "/etc/subuid";
pub const SUBGID_FILE: &str = "/etc/subgid";

/// Host uids `uid..uid+count` and gids `gid..gid+count` that the container's ids
/// `0..count` map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// The host uid of the container's root.
    pub uid: u32,
    /// The host gid of the container's group 0.
    pub gid: u32,
    pub count: u32,
}

impl IdRange {
    /// Parses `--userns`'s value: empty or `auto` for the host's range ([`IdRange::from_host`]),
    /// else the base (uid and gid alike), e.g. `1000000`.
    pub fn parse(input: &str) -> Result<IdRange, SpecError> {
        match input.trim() {
            "" | "auto" => IdRange::from_host(),
            base => {
                let base = base.parse::<u32>().map_err(|_| SpecError::Userns {
                    input: input.to_string(),
                    why: "the base is not a number".into(),
                })?;
                IdRange::with_base(base, base).map_err(|why| SpecError::Userns {
                    input: input.to_string(),
                    why,
                })
            }
        }
    }

    /// The range of the `sandbox` lines of `/etc/subuid` and `/etc/subgid`, else the default.
    pub fn from_host() -> Result<IdRange, SpecError> {
        let read = |path: &str| std::fs::read_to_string(Path::new(path)).ok();
        IdRange::from_subid(read(SUBUID_FILE).as_deref(), read(SUBGID_FILE).as_deref())
    }

    /// The range of the `sandbox` lines in the contents of `/etc/subuid` and `/etc/subgid`
    /// (`None`: the file is missing or unreadable); the default when neither has one.
    pub fn from_subid(subuid: Option<&str>, subgid: Option<&str>) -> Result<IdRange, SpecError> {
        let uid = subuid.and_then(subid_line);
        let gid = subgid.and_then(subid_line);
        let bad = |file: &str, why: String| SpecError::SubId {
            file: file.to_string(),
            why,
        };
        let (uid, gid) = match (uid, gid) {
            (None, None) => return Ok(IdRange::default()),
            (Some(u), Some(g)) => (u, g),
            (Some(_), None) => {
                return Err(bad(
                    SUBGID_FILE,
                    format!("it has no line for {SUBID_USER} while {SUBUID_FILE} has one"),
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    SUBUID_FILE,
                    format!("it has no line for {SUBID_USER} while {SUBGID_FILE} has one"),
                ))
            }
        };
        for (file, (_, count)) in [(SUBUID_FILE, uid), (SUBGID_FILE, gid)] {
            if count < COUNT {
                return Err(bad(
                    file,
                    format!(
                        "the line for {SUBID_USER} gives {count} ids, and a container maps {COUNT} \
                         (0 to {} inside)",
                        COUNT - 1
                    ),
                ));
            }
        }
        IdRange::with_base(uid.0, gid.0).map_err(|why| bad(SUBUID_FILE, why))
    }

    /// The range starting at host uid `uid` and gid `gid`; refused when it would include the
    /// host's root or run past the last id.
    pub fn with_base(uid: u32, gid: u32) -> Result<IdRange, String> {
        for (what, base) in [("uid", uid), ("gid", gid)] {
            if base == 0 {
                return Err(format!(
                    "host {what} 0 is the host's root, which is what a user namespace keeps the \
                     container's root away from"
                ));
            }
            // The last id, 4294967295, is the kernel's "no id": the range must end before it.
            if base.checked_add(COUNT).is_none() {
                return Err(format!(
                    "host {what}s {base} to {base}+{} do not fit below 4294967295",
                    COUNT - 1
                ));
            }
        }
        Ok(IdRange {
            uid,
            gid,
            count: COUNT,
        })
    }

    /// The host uid of the container's uid `id` (`None` outside the range).
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        (id < self.count).then(|| self.uid + id)
    }
}

impl Default for IdRange {
    fn default() -> IdRange {
        IdRange {
            uid: DEFAULT_BASE,
            gid: DEFAULT_BASE,
            count: COUNT,
        }
    }
}

/// The `(start, count)` of the first well-formed line for [`SUBID_USER`] in a subid file.
fn subid_line(text: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        if fields.next()? != SUBID_USER {
            return None;
        }
        let start = fields.next()?.trim().parse().ok()?;
        let count = fields.next()?.trim().parse().ok()?;
        fields.next().is_none().then_some((start, count))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_maps_root_and_65536_ids() {
        let r = IdRange::parse("2000000").unwrap();
        assert_eq!(
            r,
            IdRange {
                uid: 2_000_000,
                gid: 2_000_000,
                count: 65536
            }
        );
        assert_eq!(r.host_uid(0), Some(2_000_000));
        assert_eq!(r.host_uid(65535), Some(2_065_535));
        assert_eq!(r.host_uid(65536), None);
        for bad in ["0", "-1", "lots", "4294967000"] {
            let err = IdRange::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        assert!(IdRange::parse("4294901759").is_ok(), "the last range that fits");
        assert!(IdRange::parse("4294901760").is_err());
    }

    #[test]
    fn the_sandbox_lines_of_the_subid_files_name_the_range() {
        let uid = "root:100000:65536\nsandbox:300000:65536\n";
        let gid = "# comment\nsandbox:400000:100000\n";
        let r = IdRange::from_subid(Some(uid), Some(gid)).unwrap();
        assert_eq!((r.uid, r.gid, r.count), (300_000, 400_000, 65536));
        assert_eq!(
            IdRange::from_subid(Some("root:100000:65536\n"), None).unwrap(),
            IdRange::default()
        );
        assert_eq!(IdRange::from_subid(None, None).unwrap().uid, DEFAULT_BASE);
        let err = IdRange::from_subid(Some(uid), Some("")).unwrap_err().to_string();
        assert!(err.contains("/etc/subgid") && err.contains("no line"), "{err}");
        let err = IdRange::from_subid(Some("sandbox:300000:1000\n"), Some(gid))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/subuid") && err.contains("1000 ids"), "{err}");
    }
}
