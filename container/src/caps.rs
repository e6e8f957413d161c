//! Capabilities: reduce the container's first process to the OCI/Docker default set.
//!
//! Order matters: the bounding set is trimmed first (that needs CAP_SETPCAP, which we still
//! hold), then the ambient set is cleared, then `capset` sets effective = permitted =
//! inheritable = the default set. What survives `execve` of a root process is the bounding set
//! intersected with what it had, so the guest program starts with exactly [`DEFAULT_CAPS`].

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

/// The names of the capabilities in `mask` (lower case, without `CAP_`), for the trace.
pub fn names(mask: u64) -> String {
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

/// Drops every capability outside `keep` from the bounding and ambient sets, and sets the
/// effective, permitted and inheritable sets to `keep`.
pub fn restrict_to(keep: u64, last_cap: u32) -> Result<(), (&'static str, Errno)> {
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
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let low = keep as u32;
    let high = (keep >> 32) as u32;
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: low,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: high,
        },
    ];
    // SAFETY: capset reads one header and two data structs (version 3 layout), both alive for
    // the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(("setting the capability sets", Errno::last()));
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
    fn default_set_matches_dockers_capeff() {
        assert_eq!(DEFAULT_CAPS, 0xa804_25fb);
    }
}
