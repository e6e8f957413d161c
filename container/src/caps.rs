//! Capabilities: the names, the Docker/OCI default set, and setting all five sets of the
//! container's first process.
//!
//! Order matters: the bounding set is trimmed first (that needs CAP_SETPCAP, which we still
//! hold), then the ambient set is cleared, then `capset` sets the effective, permitted and
//! inheritable sets, and last each ambient capability is raised (it must already be permitted
//! and inheritable). A root process keeps its sets across `execve`; a non-root one keeps only
//! the ambient set (then also its effective and permitted sets), which is why a workload running
//! as a user gets its capabilities through ambient.

use nix::errno::Errno;

/// The Docker/OCI default capabilities, by number.
pub const DEFAULT_CAP_NUMBERS: [u32; 14] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// The default set as a mask, as `CapEff` in /proc/PID/status shows it (`00000000a80425fb`).
pub const DEFAULT_CAPS: u64 = {
    let mut mask = 0u64;
    let mut i = 0;
    while i < DEFAULT_CAP_NUMBERS.len() {
        mask |= 1 << DEFAULT_CAP_NUMBERS[i];
        i += 1;
    }
    mask
};

/// The capability names the kernel numbers (lower case, without `CAP_`), by number.
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The names of the capabilities in `mask` (lower case, without `CAP_`), for the trace.
pub fn names(mask: u64) -> String {
    (0..64)
        .filter(|cap| mask & (1u64 << cap) != 0)
        .map(|cap| NAMES.get(cap).map_or(format!("cap{cap}"), |n| n.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// This process's capability sets as the kernel reports them (`CapEff=... CapBnd=...` from
/// /proc/self/status), for the trace.
pub fn sets_of_self() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let sets: Vec<String> = status
        .lines()
        .filter_map(|l| l.strip_prefix("Cap"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| format!("Cap{k}={}", v.trim()))
        .collect();
    if sets.is_empty() {
        "/proc/self/status unreadable".into()
    } else {
        sets.join(" ")
    }
}

/// The highest capability number this kernel knows (read in the launcher, before the child is
/// created, so the child needs no file access).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The number of capability `name` (`CAP_CHOWN`, case-insensitive, the prefix optional).
pub fn number(name: &str) -> Option<u32> {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// The mask of the capabilities `names`; an unknown name is returned as the error.
pub fn mask_of(names: &[String]) -> Result<u64, String> {
    names.iter().try_fold(0u64, |mask, name| {
        number(name)
            .map(|n| mask | (1u64 << n))
            .ok_or_else(|| name.clone())
    })
}

/// The five capability sets as masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sets {
    pub bounding: u64,
    pub effective: u64,
    pub inheritable: u64,
    pub permitted: u64,
    pub ambient: u64,
}

impl Sets {
    /// Docker's default set in the bounding, effective, permitted and inheritable sets.
    pub const DEFAULT: Sets = Sets {
        bounding: DEFAULT_CAPS,
        effective: DEFAULT_CAPS,
        inheritable: DEFAULT_CAPS,
        permitted: DEFAULT_CAPS,
        ambient: 0,
    };

    /// The sets a plan asks for (`None`: [`Sets::DEFAULT`]), or the first unknown name.
    pub fn from_plan(plan: Option<&sandbox_protocol::isolation::CapabilitySets>) -> Result<Sets, String> {
        let Some(c) = plan else {
            return Ok(Sets::DEFAULT);
        };
        Ok(Sets {
            bounding: mask_of(&c.bounding)?,
            effective: mask_of(&c.effective)?,
            inheritable: mask_of(&c.inheritable)?,
            permitted: mask_of(&c.permitted)?,
            ambient: mask_of(&c.ambient)?,
        })
    }

    /// The same sets without the capabilities this host's bounding set does not have (they
    /// cannot be granted; `host_bounding` is the launcher's own bounding set).
    pub fn limited_to(self, host_bounding: u64) -> Sets {
        Sets {
            bounding: self.bounding & host_bounding,
            effective: self.effective & host_bounding,
            inheritable: self.inheritable & host_bounding,
            permitted: self.permitted & host_bounding,
            ambient: self.ambient & host_bounding,
        }
    }
}

/// The calling process's bounding set (`CapBnd` of /proc/self/status).
pub fn bounding_of_self() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Drops every capability outside `keep` from the bounding set and clears the ambient set
/// (while CAP_SETPCAP is still held, before any user change).
pub fn drop_bounding(keep: u64, last_cap: u32) -> Result<(), (&'static str, Errno)> {
    for cap in 0..=last_cap.min(63) {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with PR_CAPBSET_DROP takes a capability number and no pointers.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            // EINVAL: a number this kernel does not have; nothing to drop.
            if rc != 0 && Errno::last() != Errno::EINVAL {
                return Err(("dropping a capability from the bounding set", Errno::last()));
            }
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(("clearing the ambient capabilities", Errno::last()));
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets, then raises each ambient capability that
/// is also permitted and inheritable.
pub fn set(sets: &Sets, last_cap: u32) -> Result<(), (&'static str, Errno)> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: sets.effective as u32,
            permitted: sets.permitted as u32,
            inheritable: sets.inheritable as u32,
        },
        CapData {
            effective: (sets.effective >> 32) as u32,
            permitted: (sets.permitted >> 32) as u32,
            inheritable: (sets.inheritable >> 32) as u32,
        },
    ];
    // SAFETY: capset reads one header and two data structs (version 3 layout), both alive for
    // the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(("setting the capability sets", Errno::last()));
    }
    // An ambient capability must be both permitted and inheritable; one that is not cannot be
    // raised, and is left out (as runc and crun do) rather than failing the container.
    let raisable = sets.ambient & sets.permitted & sets.inheritable;
    for cap in (0..=last_cap.min(63)).filter(|c| raisable & (1 << c) != 0) {
        // SAFETY: PR_CAP_AMBIENT_RAISE takes a capability number and no pointers.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(("raising an ambient capability", Errno::last()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernels_numbering() {
        assert_eq!(names(1 << 0 | 1 << 21), "chown,sys_admin");
        assert_eq!(names(DEFAULT_CAPS).split(',').count(), DEFAULT_CAP_NUMBERS.len());
    }

    #[test]
    fn oci_names_map_to_numbers() {
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("cap_chown"), Some(0));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_TEST"), None);
        let names: Vec<String> = ["CAP_KILL", "CAP_SETUID"].map(String::from).to_vec();
        assert_eq!(mask_of(&names), Ok(1 << 5 | 1 << 7));
        assert_eq!(mask_of(&["CAP_TEST".into()]), Err("CAP_TEST".into()));
    }

    #[test]
    fn sets_without_a_plan_are_dockers_and_are_limited_to_the_host() {
        let sets = Sets::from_plan(None).unwrap();
        assert_eq!(sets, Sets::DEFAULT);
        let limited = sets.limited_to(!(1 << 0));
        assert_eq!(limited.effective, DEFAULT_CAPS & !1);
    }

    #[test]
    fn default_set_matches_dockers_capeff() {
        assert_eq!(DEFAULT_CAPS, 0xa804_25fb);
    }
}
