//! An OCI bundle's confinement inside a VM ([`GuestConfinement`]): namespaces of its own,
//! capability sets and seccomp filters, applied by the child between fork and exec to the
//! workload and to every process the agent starts. The host resolved the names and compiled the
//! profile; everything here is converted before the fork, and the child's steps only make
//! system calls (no allocation, see [`super::exec`]).

use nix::errno::Errno;
use sandbox_protocol::isolation::{GuestConfinement, NamespaceKind};

/// The confinement, ready for the child.
#[derive(Debug)]
pub struct Confinement {
    unshare_flags: libc::c_int,
    /// bounding, effective, permitted, inheritable, ambient.
    caps: Option<[u64; 5]>,
    no_new_privileges: bool,
    programs: Vec<Vec<libc::sock_filter>>,
    last_cap: u32,
}

/// A failed step: what, and the error.
pub type StepError = (&'static str, Errno);

impl Confinement {
    pub fn new(c: &GuestConfinement) -> Confinement {
        let unshare_flags = c
            .namespaces
            .iter()
            .map(|k| match k {
                NamespaceKind::Mount => libc::CLONE_NEWNS,
                NamespaceKind::Uts => libc::CLONE_NEWUTS,
                NamespaceKind::Ipc => libc::CLONE_NEWIPC,
                NamespaceKind::Network => libc::CLONE_NEWNET,
                NamespaceKind::Cgroup => libc::CLONE_NEWCGROUP,
                _ => 0,
            })
            .fold(0, |a, f| a | f);
        let programs = c
            .seccomp
            .iter()
            .map(|p| {
                p.iter()
                    .map(|w| libc::sock_filter {
                        code: *w as u16,
                        jt: (*w >> 16) as u8,
                        jf: (*w >> 24) as u8,
                        k: (*w >> 32) as u32,
                    })
                    .collect()
            })
            .collect();
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        Confinement {
            unshare_flags,
            caps: c.capabilities,
            no_new_privileges: c.no_new_privileges,
            programs,
            last_cap,
        }
    }

    /// The namespaces [`Confinement::unshare`] makes: their names under `/proc/PID/ns` and
    /// `setns` types, the mount namespace last (joining it moves the root).
    pub fn namespace_files(&self) -> Vec<(&'static str, libc::c_int)> {
        [
            ("uts", libc::CLONE_NEWUTS),
            ("ipc", libc::CLONE_NEWIPC),
            ("net", libc::CLONE_NEWNET),
            ("cgroup", libc::CLONE_NEWCGROUP),
            ("mnt", libc::CLONE_NEWNS),
        ]
        .into_iter()
        .filter(|(_, flag)| self.unshare_flags & flag != 0)
        .collect()
    }

    /// Namespaces of its own (before the workload root is entered: a mount namespace keeps the
    /// guest's mounts out of the workload's reach).
    pub fn unshare(&self) -> Result<(), StepError> {
        if self.unshare_flags == 0 {
            return Ok(());
        }
        // SAFETY: unshare takes flags by value.
        if unsafe { libc::unshare(self.unshare_flags) } < 0 {
            return Err(("unsharing the bundle's namespaces", Errno::last()));
        }
        Ok(())
    }

    /// Whether the filters go in before the identity change (without `no_new_privs` the kernel
    /// wants CAP_SYS_ADMIN, which root has now and may not have after).
    pub fn seccomp_early(&self) -> bool {
        !self.no_new_privileges
    }

    /// Drops what the bounding set does not keep, and keeps the permitted set across a change
    /// of uid (the sets are set after it).
    pub fn before_identity(&self) -> Result<(), StepError> {
        let Some([bounding, ..]) = self.caps else {
            return Ok(());
        };
        for cap in 0..=self.last_cap.min(63) {
            if bounding & (1 << cap) == 0 {
                // SAFETY: prctl with integer arguments only.
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
                    return Err(("dropping a capability from the bounding set", Errno::last()));
                }
            }
        }
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
            return Err(("keeping capabilities across the uid change", Errno::last()));
        }
        Ok(())
    }

    /// Sets the effective, permitted and inheritable sets, raises the ambient ones, and sets
    /// `no_new_privs` when asked.
    pub fn after_identity(&self) -> Result<(), StepError> {
        if let Some([_, effective, permitted, inheritable, ambient]) = self.caps {
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let mut header = Header {
                version: 0x2008_0522,
                pid: 0,
            };
            let data = [
                Data {
                    effective: effective as u32,
                    permitted: permitted as u32,
                    inheritable: inheritable as u32,
                },
                Data {
                    effective: (effective >> 32) as u32,
                    permitted: (permitted >> 32) as u32,
                    inheritable: (inheritable >> 32) as u32,
                },
            ];
            // SAFETY: capset reads one header and two data structs, both alive for the call.
            if unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) } < 0 {
                return Err(("setting the capability sets", Errno::last()));
            }
            for cap in 0..=self.last_cap.min(63) {
                if ambient & (1 << cap) != 0 {
                    // SAFETY: prctl with integer arguments only.
                    let rc = unsafe {
                        libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                            cap as libc::c_ulong,
                            0,
                            0,
                        )
                    };
                    if rc < 0 {
                        return Err(("raising an ambient capability", Errno::last()));
                    }
                }
            }
        }
        if self.no_new_privileges {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
                return Err(("setting no_new_privs", Errno::last()));
            }
        }
        Ok(())
    }

    /// Installs the seccomp filters, in order.
    pub fn install_seccomp(&self) -> Result<(), StepError> {
        for program in &self.programs {
            let prog = libc::sock_fprog {
                len: program.len() as libc::c_ushort,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: seccomp(SET_MODE_FILTER) reads the sock_fprog and the instructions it
            // points to, alive for the call; the kernel copies the program.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                return Err(("installing the bundle's seccomp filter", Errno::last()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_the_same_instructions() {
        let c = Confinement::new(&GuestConfinement {
            namespaces: vec![NamespaceKind::Mount, NamespaceKind::Pid, NamespaceKind::Uts],
            seccomp: vec![vec![0x20 | 1 << 16 | 2 << 24 | 0xdead_beef << 32]],
            ..GuestConfinement::default()
        });
        assert_eq!(
            c.unshare_flags,
            libc::CLONE_NEWNS | libc::CLONE_NEWUTS,
            "no PID namespace"
        );
        let i = c.programs[0][0];
        assert_eq!((i.code, i.jt, i.jf, i.k), (0x20, 1, 2, 0xdead_beef));
    }
}
