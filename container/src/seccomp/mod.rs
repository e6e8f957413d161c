//! Seccomp: the default filter, and compiling a profile given in the OCI spec's shape.
//!
//! The default filter refuses (EPERM) what Docker's default profile refuses.
//!
//! Docker's profile is an allow-list; this is the equivalent deny-list for a container whose
//! capabilities are already the default set: kernel modules, kexec, reboot, swap, the clock,
//! mounting and namespace changes, keyrings, BPF, perf, handle-based opens, and `clone` with
//! namespace flags. `clone3` answers ENOSYS (its flags sit in memory the filter cannot read), so
//! libc falls back to `clone`, which the filter can check — Docker does the same.
//!
//! The filter is compiled in the launcher; the child only installs it (no allocation there).

use crate::ContainerError;
use sandbox_protocol::isolation::{SeccompArg, SeccompProfile};

pub mod syscalls;
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

/// Compiles an OCI-shaped profile. Filters stack in the kernel, which takes the most
/// restrictive answer of all (and among equal ones, the last installed), so the profile becomes:
/// first one filter answering the default action except for the syscalls the profile allows
/// (with their argument conditions); then one filter per other action, answering it for its
/// syscalls and allowing the rest. Syscall names this architecture lacks are skipped.
pub fn compile(profile: &SeccompProfile) -> Result<Filters, ContainerError> {
    let default = action(&profile.default_action, profile.default_errno)?;
    // Per action: per syscall, its conditional rules, or `None` when it matches unconditionally.
    type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;
    let mut groups: Vec<(SeccompAction, Rules)> = Vec::new();
    for rule in &profile.syscalls {
        let act = action(&rule.action, rule.errno)?;
        let conditions = rule.args.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
        let index = match groups.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                groups.push((act, BTreeMap::new()));
                groups.len() - 1
            }
        };
        for nr in rule.names.iter().filter_map(|n| syscalls::number(n)) {
            let entry = groups[index].1.entry(nr).or_insert_with(|| Some(Vec::new()));
            match (entry.as_mut(), conditions.is_empty()) {
                (_, true) => *entry = None,
                (Some(rules), false) => rules.push(SeccompRule::new(conditions.clone()).map_err(err)?),
                (None, false) => {}
            }
        }
    }
    let finish = |rules: Rules| -> BTreeMap<i64, Vec<SeccompRule>> {
        rules
            .into_iter()
            .map(|(nr, r)| (nr, r.unwrap_or_default()))
            .collect()
    };
    let mut programs = Vec::new();
    let allowed = groups
        .iter()
        .position(|(a, _)| *a == SeccompAction::Allow)
        .map(|i| groups.remove(i).1)
        .unwrap_or_default();
    if default != SeccompAction::Allow {
        let first = SeccompFilter::new(finish(allowed), default.clone(), SeccompAction::Allow, arch()?)
            .map_err(err)?;
        programs.push(BpfProgram::try_from(first).map_err(err)?);
    }
    for (act, rules) in groups {
        if act == default || rules.is_empty() {
            continue;
        }
        let filter = SeccompFilter::new(finish(rules), SeccompAction::Allow, act, arch()?).map_err(err)?;
        programs.push(BpfProgram::try_from(filter).map_err(err)?);
    }
    Ok(Filters { programs })
}

/// The OCI action name as seccompiler's action.
fn action(name: &str, errno: Option<u32>) -> Result<SeccompAction, ContainerError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno.unwrap_or(libc::EPERM as u32)),
        other => {
            return Err(ContainerError::Seccomp(format!(
                "action {other:?} is not supported: use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, \
                 SCMP_ACT_KILL(_PROCESS|_THREAD), SCMP_ACT_TRAP, SCMP_ACT_LOG or SCMP_ACT_TRACE"
            )))
        }
    })
}

/// One OCI argument condition.
fn condition(arg: &SeccompArg) -> Result<SeccompCondition, ContainerError> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_NE" => SeccompCmpOp::Ne,
        "SCMP_CMP_LT" => SeccompCmpOp::Lt,
        "SCMP_CMP_LE" => SeccompCmpOp::Le,
        "SCMP_CMP_EQ" => SeccompCmpOp::Eq,
        "SCMP_CMP_GE" => SeccompCmpOp::Ge,
        "SCMP_CMP_GT" => SeccompCmpOp::Gt,
        // OCI: `value` is the mask, `valueTwo` the expected result.
        "SCMP_CMP_MASKED_EQ" => {
            return SeccompCondition::new(
                arg.index as u8,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(arg.value),
                arg.value_two,
            )
            .map_err(err)
        }
        other => {
            return Err(ContainerError::Seccomp(format!(
                "argument operator {other:?} is not supported: use SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT or _MASKED_EQ"
            )))
        }
    };
    SeccompCondition::new(arg.index as u8, SeccompCmpArgLen::Qword, op, arg.value).map_err(err)
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

    /// Installs the filters in the calling thread, in order. It does not set `no_new_privs`
    /// (that is the plan's choice): without it the kernel wants CAP_SYS_ADMIN, so the container
    /// installs its filters before it drops that capability.
    pub fn install(&self) -> Result<(), String> {
        for program in &self.programs {
            let len = u16::try_from(program.len())
                .map_err(|_| format!("a filter of {} instructions is too long", program.len()))?;
            #[repr(C)]
            struct SockFprog {
                len: libc::c_ushort,
                filter: *const seccompiler::sock_filter,
            }
            let prog = SockFprog {
                len,
                filter: program.as_ptr(),
            };
            // SAFETY: seccomp(SET_MODE_FILTER) reads the sock_fprog and the `len` instructions it
            // points to, all alive for the call; the kernel copies the program.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const SockFprog,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sandbox_protocol::isolation::SeccompRulePlan;

    #[test]
    fn the_default_filters_compile() {
        let filters = default_filters().unwrap();
        assert_eq!(filters.programs.len(), 2);
        assert!(filters.programs.iter().all(|p| !p.is_empty()));
    }

    fn rule(names: &[&str], action: &str, errno: Option<u32>) -> SeccompRulePlan {
        SeccompRulePlan {
            names: names.iter().map(|n| n.to_string()).collect(),
            action: action.into(),
            errno,
            args: Vec::new(),
        }
    }

    /// Runs `f` in a forked child after installing `filters`; returns the child's exit code.
    fn in_child(filters: &Filters, f: fn() -> i32) -> i32 {
        // SAFETY: the child only installs the filter, makes raw syscalls and _exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match filters.install() {
                    Ok(()) => f(),
                    Err(_) => 99,
                };
                // SAFETY: ends the forked child without running the test harness's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).unwrap() {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("child ended with {other:?}"),
                }
            }
        }
    }

    fn getcwd_errno() -> i32 {
        let mut buf = [0u8; 256];
        // SAFETY: getcwd writes at most buf.len() bytes into buf.
        let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
        if rc < 0 {
            nix::errno::Errno::last() as i32
        } else {
            0
        }
    }

    #[test]
    fn a_config_profile_refuses_what_it_names_with_its_errno() {
        let profile = SeccompProfile {
            default_action: "SCMP_ACT_ALLOW".into(),
            default_errno: None,
            architectures: vec!["SCMP_ARCH_X86_64".into()],
            syscalls: vec![rule(&["getcwd", "chown32"], "SCMP_ACT_ERRNO", None)],
        };
        let filters = compile(&profile).unwrap();
        assert_eq!(filters.programs.len(), 1);
        assert_eq!(in_child(&filters, getcwd_errno), libc::EPERM);
    }

    #[test]
    fn an_allowlist_answers_the_default_and_later_rules_win_ties() {
        let mut allowed: Vec<&str> = syscalls::TABLE.iter().map(|(n, _)| *n).collect();
        allowed.retain(|n| *n != "getcwd" && *n != "clone3");
        let profile = SeccompProfile {
            default_action: "SCMP_ACT_ERRNO".into(),
            default_errno: Some(libc::EACCES as u32),
            architectures: Vec::new(),
            syscalls: vec![
                rule(&allowed, "SCMP_ACT_ALLOW", None),
                rule(&["clone3"], "SCMP_ACT_ERRNO", Some(libc::ENOSYS as u32)),
            ],
        };
        let filters = compile(&profile).unwrap();
        assert_eq!(filters.programs.len(), 2);
        assert_eq!(in_child(&filters, getcwd_errno), libc::EACCES);
        fn clone3_errno() -> i32 {
            // SAFETY: clone3 with a null argument is refused by the filter before it is read.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
            if rc < 0 {
                nix::errno::Errno::last() as i32
            } else {
                0
            }
        }
        assert_eq!(in_child(&filters, clone3_errno), libc::ENOSYS);
    }

    #[test]
    fn unknown_actions_and_operators_are_named() {
        let mut profile = SeccompProfile {
            default_action: "SCMP_ACT_NOTIFY".into(),
            default_errno: None,
            architectures: Vec::new(),
            syscalls: Vec::new(),
        };
        let msg = compile(&profile).unwrap_err().to_string();
        assert!(msg.contains("SCMP_ACT_NOTIFY"), "{msg}");
        profile.default_action = "SCMP_ACT_ALLOW".into();
        let mut r = rule(&["read"], "SCMP_ACT_ERRNO", None);
        r.args.push(SeccompArg {
            index: 0,
            value: 1,
            value_two: 0,
            op: "SCMP_CMP_ALMOST".into(),
        });
        profile.syscalls.push(r);
        let msg = compile(&profile).unwrap_err().to_string();
        assert!(msg.contains("SCMP_CMP_ALMOST"), "{msg}");
    }
}
