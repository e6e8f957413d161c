//! `vmboot`: boots one VM with the sandbox VMM, for trying the VMM before `sandbox run --mode vm`
//! is wired up, and inside `sandbox lab` (point `SANDBOX_BIN` at this binary).
//!
//! ```text
//! vmboot --kernel VMLINUX --root DISK [--mem MIB] [--cpus N] [--ro] [--keep-copy PATH]
//!        [--net TAP] [--echo-port PORT] [--find-in-disks TEXT] [--cmdline-extra S] [--verbose]
//!        [--allow-pvm] [-- CMD ARGS...]
//! vmboot --probe [--allow-pvm]
//! ```
//! With `--keep-copy PATH`, the root disk is first copied to PATH and the VM boots the copy
//! (a per-VM writable disk that stays for inspection); `--find-in-disks TEXT` then says whether
//! TEXT is in the copy and in the base. `--echo-port PORT` answers one TCP connection on the host
//! (any address, so the tap's) with `pong: ` and the line it got, for `--net` round trips. Exits
//! with the workload's status; the outcome and timings go to stderr.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use sandbox_protocol::{exit_device, Mode, NetPlan, Plan, ReadyChannel};
use sandbox_vmm::{probe, run, DiskConfig, NetConfig, VmConfig};

fn usage() -> ! {
    eprintln!("usage: vmboot --kernel VMLINUX --root DISK [--mem MIB] [--cpus N] [--ro] [--keep-copy PATH] [--net TAP] [--cmdline-extra S] [--verbose] [--allow-pvm] [-- CMD ARGS...]\n       vmboot --probe [--allow-pvm]");
    std::process::exit(2)
}

/// Answers one connection on `port` with `pong: LINE`.
fn echo_server(port: u16) {
    use std::io::{BufRead, BufReader, Write};
    let listener = match std::net::TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vmboot: echo server on port {port}: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        if let Ok((mut conn, peer)) = listener.accept() {
            let mut line = String::new();
            let _ = BufReader::new(&conn).read_line(&mut line);
            eprintln!("vmboot: echo server: {peer} sent {:?}", line.trim_end());
            let _ = conn.write_all(format!("pong: {line}").as_bytes());
        }
    });
}

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let mut args = std::env::args().skip(1);
    let (mut kernel, mut root, mut mem, mut cpus) = (None, None, 128u64, 1u32);
    let (mut ro, mut keep_copy, mut net, mut extra) = (false, None::<PathBuf>, None::<String>, String::new());
    let (mut verbose, mut allow_pvm, mut probe_mode) = (false, false, false);
    let (mut echo_port, mut find) = (None::<u16>, None::<String>);
    let mut command = Vec::new();
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--kernel" => kernel = Some(PathBuf::from(value())),
            "--root" => root = Some(PathBuf::from(value())),
            "--mem" => mem = value().parse().unwrap_or_else(|_| usage()),
            "--cpus" => cpus = value().parse().unwrap_or_else(|_| usage()),
            "--ro" => ro = true,
            "--keep-copy" => keep_copy = Some(PathBuf::from(value())),
            "--net" => net = Some(value()),
            "--cmdline-extra" => extra = value(),
            "--verbose" => verbose = true,
            "--allow-pvm" => allow_pvm = true,
            "--probe" => probe_mode = true,
            "--echo-port" => echo_port = Some(value().parse().unwrap_or_else(|_| usage())),
            "--find-in-disks" => find = Some(value()),
            "--" => {
                command = args.by_ref().collect();
                break;
            }
            _ => usage(),
        }
    }

    let dir = std::env::temp_dir().join(format!("vmboot-{}", std::process::id()));
    let mut config = if probe_mode {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("vmboot: {}: {e}", dir.display());
            return ExitCode::from(1);
        }
        let k = dir.join("probe.elf");
        let r = dir.join("probe.img");
        let made = std::fs::write(&k, probe::elf_kernel(&probe::exit_code(b"probe ok\r\n", 7)))
            .and_then(|_| std::fs::write(&r, vec![0u8; 4096]));
        if let Err(e) = made {
            eprintln!("vmboot: {e}");
            return ExitCode::from(1);
        }
        VmConfig::new(
            k,
            DiskConfig {
                path: r,
                read_only: true,
            },
        )
    } else {
        let (Some(kernel), Some(mut root)) = (kernel, root.clone()) else {
            usage()
        };
        if let Some(copy) = &keep_copy {
            if let Err(e) = std::fs::copy(&root, copy) {
                eprintln!("vmboot: copying {} to {}: {e}", root.display(), copy.display());
                return ExitCode::from(1);
            }
            root = copy.clone();
        }
        let mut c = VmConfig::new(
            kernel,
            DiskConfig {
                path: root,
                read_only: ro,
            },
        );
        let mut plan = Plan::new(Mode::Vm, command);
        plan.ready = ReadyChannel::Port(exit_device::PORT);
        if let Some(tap) = &net {
            plan.net = Some(NetPlan {
                interface: "eth0".into(),
                address: Ipv4Addr::new(172, 30, 0, 2),
                prefix_len: 30,
                gateway: Some(Ipv4Addr::new(172, 30, 0, 1)),
            });
            c.net = Some(NetConfig {
                tap_name: tap.clone(),
                host_address: Ipv4Addr::new(172, 30, 0, 1),
                prefix_len: 30,
                guest_mac: [0x02, 0x53, 0x42, 0x00, 0x00, 0x02],
            });
        }
        c.plan = Some(plan);
        c
    };
    config.memory_mib = if probe_mode { 64 } else { mem };
    config.vcpus = cpus;
    config.cmdline_extra = extra;
    config.verbose_kernel = verbose;
    config.allow_pvm = allow_pvm;
    config.started = started;
    if let Some(port) = echo_port {
        echo_server(port);
    }
    let result = run(config);
    if let (Some(text), Some(copy), Some(base)) = (&find, &keep_copy, &root) {
        for (what, path) in [("per-VM copy", copy), ("base disk", base)] {
            let found = std::fs::read(path)
                .map(|b| b.windows(text.len()).any(|w| w == text.as_bytes()))
                .unwrap_or(false);
            eprintln!("vmboot: {text:?} in the {what} {}: {found}", path.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(outcome) => {
            let t = outcome.timings;
            eprintln!(
                "vmboot: ending {:?} (boot protocol {})",
                outcome.ending, outcome.boot_protocol
            );
            if let Some(m) = outcome.ending.message() {
                eprintln!("vmboot: {m}");
            }
            eprintln!(
                "vmboot: µs since start: vm-built {} kernel-entry {:?} init {:?} ready {:?} exit {:?} ended {}; VMM RSS excluding guest {} KiB; console bytes dropped {}",
                t.vm_built_us,
                t.kernel_entry_us,
                t.init_started_us,
                t.ready_us,
                t.exit_reported_us,
                t.ended_us,
                outcome.vmm_rss_bytes_excluding_guest >> 10,
                outcome.console_bytes_dropped
            );
            ExitCode::from(outcome.exit_status().clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("vmboot: {e}");
            ExitCode::from(1)
        }
    }
}
