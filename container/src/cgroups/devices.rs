//! The device allowlist: which device nodes a sandbox may open (read, write) or create
//! (`mknod`), whatever nodes it has in its `/dev` or its image.
//!
//! The rules are the OCI spec's `linux.resources.devices` (in order; the last rule that matches
//! an access decides), followed by [`default_rules`]: creating any node is allowed, opening only
//! the standard character devices and ptys. On cgroup v1 they are written to the `devices`
//! controller's `devices.deny`/`devices.allow`, after `a` has emptied the list. cgroup2 has no
//! devices controller: the same rules become a small eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` ([`program`]), attached to the sandbox's cgroup, which the
//! kernel runs on every device open and `mknod`.

use super::CgroupError;
use sandbox_protocol::isolation::DeviceRule;
use std::path::Path;

/// The rules every sandbox gets after its own: `mknod` of any node (a node that cannot be
/// opened is harmless), and read/write/mknod of null, zero, full, random, urandom, tty, the
/// pty multiplexer and the ptys.
pub fn default_rules() -> Vec<DeviceRule> {
    let rule = |kind: char, major: Option<i64>, minor: Option<i64>, access: &str| DeviceRule {
        allow: true,
        kind,
        major,
        minor,
        access: access.to_string(),
    };
    vec![
        rule('c', None, None, "m"),
        rule('b', None, None, "m"),
        rule('c', Some(1), Some(3), "rwm"),
        rule('c', Some(1), Some(5), "rwm"),
        rule('c', Some(1), Some(7), "rwm"),
        rule('c', Some(1), Some(8), "rwm"),
        rule('c', Some(1), Some(9), "rwm"),
        rule('c', Some(5), Some(0), "rwm"),
        rule('c', Some(5), Some(2), "rwm"),
        rule('c', Some(136), None, "rwm"),
    ]
}

/// A rule as a v1 `devices.allow`/`devices.deny` line: `c 1:3 rwm`, `a *:* rwm`.
pub fn v1_line(rule: &DeviceRule) -> String {
    let num = |n: Option<i64>| n.filter(|n| *n >= 0).map_or("*".to_string(), |n| n.to_string());
    let access = if rule.access.is_empty() {
        "rwm"
    } else {
        &rule.access
    };
    if rule.kind == 'a' {
        return format!("a *:* {access}");
    }
    format!("{} {}:{} {access}", rule.kind, num(rule.major), num(rule.minor))
}

// The eBPF program's context (`struct bpf_cgroup_dev_ctx`): access_type (access << 16 | type),
// major, minor; each a u32.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn access_mask(access: &str) -> i32 {
    let access = if access.is_empty() { "rwm" } else { access };
    access.chars().fold(0, |m, c| {
        m | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// The eBPF program for `rules` (then the defaults): the last matching rule decides, no match
/// denies. Registers: r2 = device type, r3 = requested access, r4 = major, r5 = minor.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut out = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    let all: Vec<DeviceRule> = rules.iter().cloned().chain(default_rules()).collect();
    for rule in all.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Each test jumps past the rest of the block when it fails; offsets are patched once the
        // block's length is known (the value -1 marks "to the block's end").
        match rule.kind {
            'c' => block.push(insn(JNE_K, 2, 0, -1, DEV_CHAR)),
            'b' => block.push(insn(JNE_K, 2, 0, -1, DEV_BLOCK)),
            _ => {}
        }
        let mask = access_mask(&rule.access);
        if mask != ACC_MKNOD | ACC_READ | ACC_WRITE {
            block.push(insn(MOV_X, 6, 3, 0, 0));
            block.push(insn(AND_K, 6, 0, 0, !mask));
            block.push(insn(JNE_K, 6, 0, -1, 0));
        }
        if rule.kind != 'a' {
            if let Some(major) = rule.major.filter(|m| *m >= 0) {
                block.push(insn(JNE_K, 4, 0, -1, major as i32));
            }
            if let Some(minor) = rule.minor.filter(|m| *m >= 0) {
                block.push(insn(JNE_K, 5, 0, -1, minor as i32));
            }
        }
        block.push(insn(MOV_K, 0, 0, 0, i32::from(rule.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K && ins.off == -1 {
                ins.off = (len - i - 1) as i16;
            }
        }
        out.extend(block);
    }
    out.push(insn(MOV_K, 0, 0, 0, 0));
    out.push(insn(EXIT, 0, 0, 0, 0));
    out
}

/// Loads the program for `rules` and attaches it to the cgroup2 directory `dir`. The kernel
/// keeps it attached as long as the cgroup exists.
pub(super) fn attach_v2(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    use std::os::fd::AsRawFd;
    let io = |action: &str, source: std::io::Error| CgroupError::Io {
        action: action.to_string(),
        path: dir.to_path_buf(),
        source,
    };
    let insns = program(rules);
    let began = sandbox_protocol::trace::start();
    let prog = load(&insns).map_err(|e| io("load the device-allowlist eBPF program for", e))?;
    let cgroup = std::fs::File::open(dir).map_err(|e| io("open", e))?;
    attach(cgroup.as_raw_fd(), prog.as_raw_fd())
        .map_err(|e| io("attach the device-allowlist eBPF program to", e))?;
    sandbox_protocol::trace::step("cgroup.devices", began, || {
        format!(
            "{}: eBPF device program, {} rules, {} instructions",
            dir.display(),
            rules.len() + default_rules().len(),
            insns.len()
        )
    });
    Ok(())
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn load(insns: &[Insn]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let license = c"Apache-2.0";
    // union bpf_attr, BPF_PROG_LOAD part: prog_type, insn_cnt, insns, license, log_level,
    // log_size, log_buf, kern_version, prog_flags, prog_name[16], ..., expected_attach_type.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..56].copy_from_slice(b"sbx_dev\0");
    // SAFETY: bpf(BPF_PROG_LOAD) reads `attr` (its size is passed) and the instruction array
    // and license string it points to, all alive for the call; it returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

fn attach(cgroup_fd: i32, prog_fd: i32) -> std::io::Result<()> {
    // union bpf_attr, BPF_PROG_ATTACH part: target_fd, attach_bpf_fd, attach_type, attach_flags.
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(cgroup_fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    // SAFETY: bpf(BPF_PROG_ATTACH) reads `attr` (its size is passed); both descriptors are open.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, attr.as_ptr(), attr.len()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines_use_stars_for_any() {
        let any = DeviceRule {
            allow: false,
            kind: 'a',
            major: None,
            minor: None,
            access: "rwm".into(),
        };
        assert_eq!(v1_line(&any), "a *:* rwm");
        assert_eq!(v1_line(&default_rules()[9]), "c 136:* rwm");
        assert_eq!(v1_line(&default_rules()[2]), "c 1:3 rwm");
    }

    /// Runs the generated program on one access in a tiny interpreter of the instructions it
    /// uses, so the jump offsets and rule order are checked without loading it.
    fn run(prog: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> i64 {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = i64::from(ctx[(i.off / 4) as usize]),
                AND_K => r[dst] &= i64::from(i.imm),
                RSH_K => r[dst] = ((r[dst] as u64) >> i.imm) as i64,
                MOV_X => r[dst] = r[src],
                MOV_K => r[dst] = i64::from(i.imm),
                JNE_K => {
                    if r[dst] != i64::from(i.imm) {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_program_allows_the_standard_nodes_and_refuses_the_rest() {
        let deny_all = DeviceRule {
            allow: false,
            kind: 'a',
            major: None,
            minor: None,
            access: "rwm".into(),
        };
        let prog = program(&[deny_all]);
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(run(&prog, DEV_CHAR, rw, 1, 3), 1, "/dev/null opens");
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 136, 7), 1, "a pty opens");
        assert_eq!(run(&prog, DEV_CHAR, rw, 10, 232), 0, "/dev/kvm does not");
        assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 8, 0), 0, "a disk does not");
        assert_eq!(
            run(&prog, DEV_BLOCK, ACC_MKNOD, 8, 0),
            1,
            "creating a node is harmless"
        );
        let kvm = DeviceRule {
            allow: true,
            kind: 'c',
            major: Some(10),
            minor: Some(232),
            access: "rw".into(),
        };
        let prog = program(&[kvm]);
        assert_eq!(run(&prog, DEV_CHAR, rw, 10, 232), 1, "an allow rule opens it");
        assert_eq!(run(&prog, DEV_CHAR, ACC_MKNOD, 10, 232), 1, "default mknod rule");
    }

    #[test]
    fn the_kernel_accepts_the_program() {
        let fd = load(&program(&[])).expect("BPF_PROG_LOAD of a cgroup device program (needs root)");
        drop(fd);
    }
}
