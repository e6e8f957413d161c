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

/// The limits `sandbox run` sets explicitly, so a sandbox does not inherit whatever the
/// launcher had: Docker's open-file limit, 1024 soft and the launcher's own hard limit
/// (raising a hard limit needs CAP_SYS_RESOURCE).
pub fn defaults() -> Vec<Rlimit> {
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 1024.min(hard),
        hard,
    }]
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
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(d[0].hard, hard);
        assert!(d[0].soft <= hard);
    }
}
