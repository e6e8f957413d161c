//! `sandbox run --mode vm --trace` prints real values, through `sandbox_lab::run_sandbox`
//! (natively on hardware KVM, in the lab's L1 on this PVM host): the guest memory regions add up
//! to `--memory`, the KVM API version is the stable 12, vCPU 0 starts at the kernel's entry
//! point inside the loaded kernel, each device has its MMIO range or port and IRQ, the guest's
//! boot messages follow with timestamps, and its init and exit reports arrive. A single VM boot
//! feeds every assertion (a lab boot costs seconds).
//!
//! Needs a built guest kernel (`sandbox kernel build`) and, on a host without hardware KVM,
//! qemu-system-x86 for the lab.

use sandbox_lab::LabOptions;

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

/// `(step, values)` of each `trace +µs step: values (N µs)` line, with its timestamp.
fn steps(stderr: &str) -> Vec<(u64, String, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("trace +")?;
            let (at, rest) = rest.split_once(' ')?;
            let (step, rest) = rest.split_once(": ")?;
            let (values, _) = rest.rsplit_once(" (")?;
            Some((at.parse().ok()?, step.to_string(), values.to_string()))
        })
        .collect()
}

/// The hex number after `key ` in `values` (`size 0x10000000`).
fn hex_after(values: &str, key: &str) -> Option<u64> {
    let rest = values.split_once(&format!("{key} 0x"))?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&digits, 16).ok()
}

#[test]
fn the_vm_trace_carries_real_values() {
    let opts = LabOptions {
        sandbox_bin: Some(SANDBOX.into()),
        ..LabOptions::default()
    };
    let memory_mib = 192u64;
    let memory = format!("{memory_mib}M");
    let out = sandbox_lab::run_sandbox(
        &[
            "run", "--mode", "vm", "--trace", "--memory", &memory, "--", "true",
        ],
        &opts,
    )
    .expect("sandbox runs natively or in the lab");
    eprintln!("{:?}: status {}\n{}", out.environment, out.status, out.stderr);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let steps = steps(&out.stderr);
    let of = |name: &str| -> Vec<&String> { steps.iter().filter(|s| s.1 == name).map(|s| &s.2).collect() };

    // The regions KVM was given add up to --memory.
    let regions = of("memory");
    assert!(!regions.is_empty(), "no memory step:\n{}", out.stderr);
    let total: u64 = regions
        .iter()
        .map(|v| hex_after(v, "size").unwrap_or_else(|| panic!("no size in {v:?}")))
        .sum();
    assert_eq!(total, memory_mib << 20, "memory regions {regions:#?}");
    for v in &regions {
        assert!(
            hex_after(v, "host").is_some_and(|h| h != 0),
            "no host address in {v:?}"
        );
    }

    let kvm = of("kvm");
    assert!(
        kvm.iter().any(|v| v.contains("KVM_GET_API_VERSION 12")),
        "{kvm:#?}"
    );
    assert!(of("vm").iter().any(|v| v.contains("fd ")), "{:#?}", of("vm"));

    // vCPU 0 starts where the loader says the kernel's entry is.
    let kernel = of("kernel");
    let entry = kernel
        .iter()
        .find_map(|v| hex_after(v, "entry"))
        .unwrap_or_else(|| panic!("no kernel entry in {kernel:#?}"));
    let vcpu0 = of("vcpu")
        .into_iter()
        .find(|v| v.starts_with("0:"))
        .unwrap_or_else(|| panic!("no vcpu 0 step:\n{}", out.stderr));
    assert_eq!(hex_after(vcpu0, "rip"), Some(entry), "{vcpu0}");

    // The root and plan disks at least, each with an MMIO range and an IRQ.
    let virtio: Vec<&String> = of("device")
        .into_iter()
        .filter(|v| v.starts_with("virtio"))
        .collect();
    assert!(virtio.len() >= 2, "{virtio:#?}");
    for v in &virtio {
        assert!(hex_after(v, "mmio").is_some() && v.contains(" irq "), "{v}");
    }
    assert!(
        of("device")
            .iter()
            .any(|v| v.starts_with("serial") && v.contains(" irq ")),
        "{:#?}",
        of("device")
    );
    // The kernel's entry lies inside what the loader put in guest memory.
    let load = of("kernel.load");
    let start = load
        .iter()
        .find_map(|v| hex_after(v, "guest"))
        .expect("a kernel.load step");
    assert!(
        start <= entry,
        "entry {entry:#x} below the load address {start:#x}"
    );
    // The guest's own reports through the boot/exit port.
    let events = of("guest.event");
    assert!(
        events.iter().any(|v| v.starts_with("init started")),
        "{events:#?}"
    );
    assert!(events.iter().any(|v| *v == "exit status 0"), "{events:#?}");
    let cmdline = of("cmdline");
    assert!(
        cmdline.iter().any(|v| v.contains("sandbox.plan=")),
        "{cmdline:#?}"
    );

    // The guest's boot messages, timestamped in order after the vCPU started.
    let console: Vec<&(u64, String, String)> = steps.iter().filter(|s| s.1 == "guest.console").collect();
    assert!(
        console.len() > 3,
        "no boot messages in the trace:\n{}",
        out.stderr
    );
    assert!(console.windows(2).all(|w| w[0].0 <= w[1].0));
    let started = steps.iter().find(|s| s.1 == "vcpu").map(|s| s.0).unwrap();
    assert!(console[0].0 >= started);
}
