//! Resource limits (`setrlimit`) by their OCI names, checked in the launcher and set by the
//! container's first process before `execve`.

use nix::errno::Errno;
use sandbox_protocol::isolation::Rlimit;

/// The OCI names and the kernel's resource numbers.
const RESOURCES: [(&str, libc::__rlimit_resource_t); 16] = [
    ("RLIMIT_AS", libc::RLIMIT_AS),
    ("RLIMIT_CORE", libc::RLIMIT_CORE),
    ("RLIMIT_CPU", libc::RLIMIT_CPU),
    ("RLIMIT_DATA", libc::RLIMIT_DATA),
    ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
    ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
    ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
    ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
    ("RLIMIT_NICE", libc::RLIMIT_NICE),
    ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
    ("RLIMIT_RSS", libc::RLIMIT_RSS),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
    ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
    ("RLIMIT_STACK", libc::RLIMIT_STACK),
];

/// A limit ready to set: the kernel's resource number and the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub resource: libc::__rlimit_resource_t,
    pub soft: u64,
    pub hard: u64,
}

/// Resolves the plan's limits; an unknown name or a soft limit above the hard one is refused,
/// naming the entry.
pub fn resolve(limits: &[Rlimit]) -> Result<Vec<Resolved>, String> {
    limits
        .iter()
        .map(|l| {
            let resource = RESOURCES
                .iter()
                .find(|(name, _)| *name == l.kind)
                .map(|(_, r)| *r)
                .ok_or_else(|| {
                    format!(
                        "unknown rlimit {:?}: use one of {}",
                        l.kind,
                        RESOURCES.map(|(n, _)| n).join(", ")
                    )
                })?;
            if l.soft > l.hard {
                return Err(format!(
                    "rlimit {}: the soft limit {} is above the hard limit {}",
                    l.kind, l.soft, l.hard
                ));
            }
            Ok(Resolved {
                resource,
                soft: l.soft,
                hard: l.hard,
            })
        })
        .collect()
}

/// RLIM_INFINITY.
const UNLIMITED: u64 = libc::RLIM_INFINITY;

/// What `sandbox run` sets, every limit the kernel has, so a sandbox never inherits what the
/// launcher's shell happened to have (`ulimit -c unlimited`, `ulimit -s unlimited`, a low `-n`):
/// (name, resource, soft, hard). Docker's open-file limit; no core files by default (a core dump is
/// written by the host's `core_pattern`, which may be a host program) but allowed; 8 MiB stacks
/// and locked memory as the kernel's defaults; no real-time or raised priorities; the rest
/// unlimited, as on a fresh login.
const DEFAULTS: [(&str, libc::__rlimit_resource_t, u64, u64); 16] = [
    ("RLIMIT_AS", libc::RLIMIT_AS, UNLIMITED, UNLIMITED),
    ("RLIMIT_CORE", libc::RLIMIT_CORE, 0, UNLIMITED),
    ("RLIMIT_CPU", libc::RLIMIT_CPU, UNLIMITED, UNLIMITED),
    ("RLIMIT_DATA", libc::RLIMIT_DATA, UNLIMITED, UNLIMITED),
    ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE, UNLIMITED, UNLIMITED),
    ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS, UNLIMITED, UNLIMITED),
    ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK, 8 << 20, 8 << 20),
    ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE, 819_200, 819_200),
    ("RLIMIT_NICE", libc::RLIMIT_NICE, 0, 0),
    ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE, 1024, 1 << 20),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC, UNLIMITED, UNLIMITED),
    ("RLIMIT_RSS", libc::RLIMIT_RSS, UNLIMITED, UNLIMITED),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO, 0, 0),
    ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME, UNLIMITED, UNLIMITED),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING, 1 << 16, 1 << 16),
    ("RLIMIT_STACK", libc::RLIMIT_STACK, 8 << 20, UNLIMITED),
];

/// The limits `sandbox run` sets explicitly ([`DEFAULTS`]). A hard limit above the launcher's
/// own cannot be raised without CAP_SYS_RESOURCE, which not every host gives root: each hard
/// limit is capped at the launcher's, and each soft limit at its hard one.
pub fn defaults() -> Vec<Rlimit> {
    DEFAULTS
        .iter()
        .map(|&(kind, resource, soft, hard)| {
            let mut current = libc::rlimit {
                rlim_cur: UNLIMITED,
                rlim_max: UNLIMITED,
            };
            // SAFETY: getrlimit writes one rlimit struct into `current`.
            unsafe { libc::getrlimit(resource, &mut current) };
            let hard = hard.min(current.rlim_max);
            Rlimit {
                kind: kind.into(),
                soft: soft.min(hard),
                hard,
            }
        })
        .collect()
}

/// Sets `limits` on the calling process.
pub fn apply(limits: &[Resolved]) -> Result<(), (String, Errno)> {
    for l in limits {
        let value = libc::rlimit {
            rlim_cur: l.soft,
            rlim_max: l.hard,
        };
        // SAFETY: setrlimit reads one rlimit struct, which `value` is, for the call's duration.
        let rc = unsafe { libc::setrlimit(l.resource, &value) };
        if rc != 0 {
            let errno = Errno::last();
            let name = RESOURCES
                .iter()
                .find(|(_, r)| *r == l.resource)
                .map_or("?", |(n, _)| *n);
            let hint = if errno == Errno::EPERM {
                " (raising a hard limit above the launcher's needs CAP_SYS_RESOURCE, which this host does not give: lower it)"
            } else {
                ""
            };
            return Err((format!("setting {name} to {}/{}{hint}", l.soft, l.hard), errno));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(kind: &str, soft: u64, hard: u64) -> Rlimit {
        Rlimit {
            kind: kind.into(),
            soft,
            hard,
        }
    }

    #[test]
    fn names_resolve_and_bad_entries_are_named() {
        let ok = resolve(&[limit("RLIMIT_NOFILE", 10, 20)]).unwrap();
        assert_eq!(ok[0].resource, libc::RLIMIT_NOFILE);
        let err = resolve(&[limit("RLIMIT_TEST", 1, 1)]).unwrap_err();
        assert!(err.contains("RLIMIT_TEST"), "{err}");
        let err = resolve(&[limit("RLIMIT_CORE", 5, 1)]).unwrap_err();
        assert!(err.contains("above the hard limit"), "{err}");
    }

    #[test]
    fn defaults_never_exceed_the_launchers_hard_limit() {
        let d = resolve(&defaults()).unwrap();
        assert_eq!(d.len(), RESOURCES.len(), "every limit is set");
        let nofile = d.iter().find(|l| l.resource == libc::RLIMIT_NOFILE).unwrap();
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(nofile.hard, hard.min(1 << 20));
        assert_eq!(nofile.soft, 1024.min(nofile.hard));
        let core = d.iter().find(|l| l.resource == libc::RLIMIT_CORE).unwrap();
        assert_eq!(core.soft, 0, "no core files unless asked");
    }
}
