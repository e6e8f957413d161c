//! The default seccomp filter: refuse (EPERM) what Docker's default profile refuses.
//!
//! Docker's profile is an allow-list; this is the equivalent deny-list for a container whose
//! capabilities are already the default set: kernel modules, kexec, reboot, swap, the clock,
//! mounting and namespace changes, keyrings, BPF, perf, handle-based opens, and `clone` with
//! namespace flags. `clone3` answers ENOSYS (its flags sit in memory the filter cannot read), so
//! libc falls back to `clone`, which the filter can check — Docker does the same.
//!
//! The filter is compiled in the launcher; the child only installs it (no allocation there).

use crate::ContainerError;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

/// Syscalls refused with EPERM whatever their arguments.
const REFUSED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_ioperm,
    libc::SYS_iopl,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_nfsservctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_uselib,
    libc::SYS_userfaultfd,
    libc::SYS_ustat,
    libc::SYS_vhangup,
];

/// `clone` flags that create namespaces; `clone` with any of them is refused.
const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWTIME,
];

/// The compiled filters, installed in this order.
#[derive(Debug, Clone)]
pub struct Filters {
    programs: Vec<BpfProgram>,
}

fn arch() -> Result<seccompiler::TargetArch, ContainerError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| ContainerError::Seccomp(format!("architecture {}: {e}", std::env::consts::ARCH)))
}

fn err(e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Seccomp(e.to_string())
}

/// Compiles the default filter.
pub fn default_filters() -> Result<Filters, ContainerError> {
    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> = REFUSED.iter().map(|&nr| (nr, Vec::new())).collect();
    let mut clone_rules = Vec::new();
    for &flag in NAMESPACE_FLAGS {
        let flag = flag as u64;
        // Matches when this flag is set in clone's first argument (the flags).
        let cond = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)
            .map_err(err)?;
        clone_rules.push(SeccompRule::new(vec![cond]).map_err(err)?);
    }
    eperm.insert(libc::SYS_clone, clone_rules);
    let refuse = SeccompFilter::new(
        eperm,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(err)?;
    let no_clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(err)?;
    let programs = vec![
        BpfProgram::try_from(refuse).map_err(err)?,
        BpfProgram::try_from(no_clone3).map_err(err)?,
    ];
    Ok(Filters { programs })
}

impl Filters {
    /// How many BPF programs there are, and their instructions in all (for the trace).
    pub fn size(&self) -> (usize, usize) {
        (self.programs.len(), self.programs.iter().map(Vec::len).sum())
    }

    /// How many syscalls the first filter refuses outright, plus `clone` with namespace flags.
    pub fn refused_syscalls() -> usize {
        REFUSED.len() + 1
    }

    /// Installs the filters in the calling thread; sets `no_new_privs` first (seccomp needs it
    /// when the caller lacks CAP_SYS_ADMIN, and the container wants it regardless).
    pub fn install(&self) -> Result<(), String> {
        for program in &self.programs {
            seccompiler::apply_filter(program).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filters_compile() {
        let filters = default_filters().unwrap();
        assert_eq!(filters.programs.len(), 2);
        assert!(filters.programs.iter().all(|p| !p.is_empty()));
    }
}
