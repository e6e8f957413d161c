//! Seccomp: compiling a profile given in the OCI spec's shape — a bundle's `linux.seccomp`, or
//! [`default_profile`], the allowlist every `sandbox run` container gets — into BPF programs.
//!
//! Profiles are compiled in the launcher; the container's first process only installs them (no
//! allocation there).

use crate::ContainerError;
use sandbox_protocol::isolation::{SeccompArg, SeccompProfile};

mod default_profile;
pub mod syscalls;

pub use default_profile::default_profile;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

/// Per syscall number, its conditional rules, or `None` when it matches unconditionally.
type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;

/// The compiled filters, installed in this order.
#[derive(Debug, Clone)]
pub struct Filters {
    /// The profile's size in words, for the trace: "allowlist of 310 syscalls (5 with argument
    /// conditions), others EPERM; 1 ERRNO(38)".
    pub profile: String,
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

/// Compiles the default profile.
pub fn default_filters() -> Result<Filters, ContainerError> {
    compile(&default_profile())
}

/// Compiles an OCI-shaped profile. Filters stack in the kernel, which takes the most
/// restrictive answer of all (and among equal ones, the last installed), so the profile becomes:
/// first one filter answering the default action except for the syscalls the profile allows
/// (with their argument conditions); then one filter per other action, answering it for its
/// syscalls and allowing the rest. Syscall names this architecture lacks are skipped.
pub fn compile(profile: &SeccompProfile) -> Result<Filters, ContainerError> {
    let default = action(&profile.default_action, profile.default_errno)?;
    let mut groups: Vec<(SeccompAction, Rules)> = Vec::new();
    for rule in &profile.syscalls {
        let act = action(&rule.action, rule.errno)?;
        let index = match groups.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                groups.push((act, BTreeMap::new()));
                groups.len() - 1
            }
        };
        for (name, nr) in rule
            .names
            .iter()
            .filter_map(|n| syscalls::number(n).map(|nr| (n, nr)))
        {
            let conditions = rule
                .args
                .iter()
                .map(|a| condition(a, width(name, a.index)))
                .collect::<Result<Vec<_>, _>>()?;
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
    let profile_words = describe(&default, &groups);
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
    Ok(Filters {
        profile: profile_words,
        programs,
    })
}

/// The compiled profile in a few words: how many syscalls each action takes (and how many of
/// them only with argument conditions).
fn describe(default: &SeccompAction, groups: &[(SeccompAction, Rules)]) -> String {
    let name = |a: &SeccompAction| match a {
        SeccompAction::Allow => "allowed".to_string(),
        SeccompAction::Errno(e) => format!("errno {e}"),
        other => format!("{other:?}").to_lowercase(),
    };
    let mut parts = Vec::new();
    for (act, rules) in groups {
        let conditional = rules.values().filter(|r| r.is_some()).count();
        parts.push(format!(
            "{} {} ({conditional} by argument)",
            rules.len(),
            name(act)
        ));
    }
    let kind = if *default == SeccompAction::Allow {
        "denylist"
    } else {
        "allowlist"
    };
    format!(
        "{kind}: {}; every other syscall {}",
        parts.join(", "),
        name(default)
    )
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

/// How wide an argument is compared: arguments the kernel reads as 32-bit (`ioctl`'s request,
/// `socket`'s family, type and protocol, `personality`) on their low 32 bits only, so bits above
/// cannot carry a refused value past the filter; everything else on all 64 bits.
fn width(syscall: &str, index: u32) -> SeccompCmpArgLen {
    match (syscall, index) {
        ("ioctl", 1) | ("socket", 0..=2) | ("personality", 0) => SeccompCmpArgLen::Dword,
        _ => SeccompCmpArgLen::Qword,
    }
}

/// One OCI argument condition, compared `len` wide.
fn condition(arg: &SeccompArg, len: SeccompCmpArgLen) -> Result<SeccompCondition, ContainerError> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_NE" => SeccompCmpOp::Ne,
        "SCMP_CMP_LT" => SeccompCmpOp::Lt,
        "SCMP_CMP_LE" => SeccompCmpOp::Le,
        "SCMP_CMP_EQ" => SeccompCmpOp::Eq,
        "SCMP_CMP_GE" => SeccompCmpOp::Ge,
        "SCMP_CMP_GT" => SeccompCmpOp::Gt,
        // OCI: `value` is the mask, `valueTwo` the expected result.
        "SCMP_CMP_MASKED_EQ" => {
            return SeccompCondition::new(arg.index as u8, len, SeccompCmpOp::MaskedEq(arg.value), arg.value_two)
                .map_err(err)
        }
        other => {
            return Err(ContainerError::Seccomp(format!(
                "argument operator {other:?} is not supported: use SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT or _MASKED_EQ"
            )))
        }
    };
    SeccompCondition::new(arg.index as u8, len, op, arg.value).map_err(err)
}

impl Filters {
    /// The programs as words (`code | jt << 16 | jf << 24 | k << 32` per instruction), for a
    /// guest to install ([`sandbox_protocol::isolation::GuestConfinement`]).
    pub fn to_words(&self) -> Vec<Vec<u64>> {
        self.programs
            .iter()
            .map(|p| {
                p.iter()
                    .map(|i| {
                        u64::from(i.code)
                            | u64::from(i.jt) << 16
                            | u64::from(i.jf) << 24
                            | u64::from(i.k) << 32
                    })
                    .collect()
            })
            .collect()
    }

    /// How many BPF programs there are, and their instructions in all (for the trace).
    pub fn size(&self) -> (usize, usize) {
        (self.programs.len(), self.programs.iter().map(Vec::len).sum())
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
        assert!(filters.profile.starts_with("allowlist: "), "{}", filters.profile);
        assert!(
            filters.profile.ends_with("every other syscall errno 1"),
            "{}",
            filters.profile
        );
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

    /// The errno of a raw syscall, 0 when it succeeded (any result the kernel gives but EPERM
    /// shows the filter let it through).
    fn errno_of(rc: libc::c_long) -> i32 {
        if rc < 0 {
            nix::errno::Errno::last() as i32
        } else {
            0
        }
    }

    #[test]
    fn the_default_profile_refuses_what_docker_refuses_and_more() {
        let filters = default_filters().unwrap();
        fn tiocsti() -> i32 {
            let c = b'x';
            // SAFETY: TIOCSTI reads one byte from `c`; the filter answers before the kernel does.
            errno_of(unsafe { libc::syscall(libc::SYS_ioctl, 0, 0x5412u64, &c as *const u8) })
        }
        fn tiocsti_high_bits() -> i32 {
            let c = b'x';
            // SAFETY: as above; the request's upper 32 bits are ignored by the kernel.
            errno_of(unsafe { libc::syscall(libc::SYS_ioctl, 0, 0x1_0000_5412u64, &c as *const u8) })
        }
        fn tiocgwinsz() -> i32 {
            let mut ws = [0u16; 4];
            // SAFETY: TIOCGWINSZ writes a winsize (8 bytes) into `ws`.
            errno_of(unsafe { libc::syscall(libc::SYS_ioctl, 0, libc::TIOCGWINSZ, ws.as_mut_ptr()) })
        }
        fn io_uring() -> i32 {
            let mut params = [0u8; 120];
            // SAFETY: io_uring_setup reads and writes a 120-byte io_uring_params.
            errno_of(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) })
        }
        fn vsock() -> i32 {
            // SAFETY: socket takes no pointers.
            errno_of(unsafe { libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0) })
        }
        fn inet() -> i32 {
            // SAFETY: socket takes no pointers.
            errno_of(unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_DGRAM, 0) })
        }
        fn x32_getpid() -> i32 {
            // SAFETY: getpid through the x32 ABI's number takes no arguments.
            errno_of(unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) })
        }
        fn unknown_number() -> i32 {
            // SAFETY: a number no kernel has yet takes nothing.
            errno_of(unsafe { libc::syscall(1000) })
        }
        fn clone_newuser() -> i32 {
            // SAFETY: clone with CLONE_NEWUSER and no stack is refused by the filter; if it were
            // not, the child would _exit at once.
            let rc =
                unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_NEWUSER | libc::SIGCHLD, 0, 0, 0, 0) };
            if rc == 0 {
                // SAFETY: ends the cloned child.
                unsafe { libc::_exit(0) }
            }
            errno_of(rc)
        }
        fn personality_no_randomize() -> i32 {
            // SAFETY: personality takes no pointers.
            errno_of(unsafe { libc::syscall(libc::SYS_personality, 0x0040000) })
        }
        fn personality_query() -> i32 {
            // SAFETY: personality(0xffffffff) only reads the current value.
            errno_of(unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) })
        }
        fn mount() -> i32 {
            // SAFETY: mount with null pointers is refused by the filter before they are read.
            errno_of(unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) })
        }
        let eperm = libc::EPERM;
        for (name, probe) in [
            ("TIOCSTI", tiocsti as fn() -> i32),
            ("TIOCSTI with high bits", tiocsti_high_bits),
            ("io_uring_setup", io_uring),
            ("socket(AF_VSOCK)", vsock),
            ("x32 getpid", x32_getpid),
            ("syscall 1000", unknown_number),
            ("clone(CLONE_NEWUSER)", clone_newuser),
            ("personality(ADDR_NO_RANDOMIZE)", personality_no_randomize),
            ("mount", mount),
        ] {
            assert_eq!(in_child(&filters, probe), eperm, "{name} was not refused");
        }
        for (name, probe) in [
            ("TIOCGWINSZ", tiocgwinsz as fn() -> i32),
            ("socket(AF_INET)", inet),
            ("personality query", personality_query),
        ] {
            assert_ne!(in_child(&filters, probe), eperm, "{name} was refused");
        }
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
