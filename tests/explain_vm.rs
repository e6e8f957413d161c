//! `sandbox explain vm`, through `sandbox_lab::run_sandbox` (natively on hardware KVM, in the
//! lab's L1 on this PVM host): the host sees one VMM process whose threads include a vCPU, and
//! no process of the guest; the sandbox reports its own kernel, not the host's.
//!
//! Needs a built guest kernel (`sandbox kernel build`) and, on a host without hardware KVM,
//! qemu-system-x86 for the lab.

use sandbox_lab::LabOptions;

const SANDBOX: &str = env!("CARGO_BIN_EXE_sandbox");

#[test]
fn explain_vm_shows_one_vmm_process_with_vcpu_threads_and_its_own_kernel() {
    let opts = LabOptions {
        sandbox_bin: Some(SANDBOX.into()),
        ..LabOptions::default()
    };
    let out =
        sandbox_lab::run_sandbox(&["explain", "vm"], &opts).expect("sandbox runs natively or in the lab");
    eprintln!("{:?}: status {}\n{}", out.environment, out.status, out.stdout);
    assert_eq!(out.status, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let stdout = &out.stdout;

    let line_after = |prefix: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{stdout}"))
            .trim()
            .to_string()
    };
    let host = line_after("host kernel:");
    let sandbox = line_after("sandbox kernel:");
    assert!(sandbox.ends_with("(its own)"), "{sandbox}");
    assert!(
        !sandbox.starts_with(&host),
        "the VM reports the host's kernel {host}: {sandbox}"
    );

    let view: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("the host sees:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    let processes: Vec<&&str> = view.iter().filter(|l| l.contains(" pid ")).collect();
    assert_eq!(
        processes.len(),
        1,
        "one VMM process, nothing of the guest: {view:#?}"
    );
    assert!(processes[0].trim_start().starts_with("sandbox pid "), "{view:#?}");
    assert!(!processes[0].contains("own PID ns"), "{view:#?}");
    let threads = view
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("threads: "))
        .unwrap_or_else(|| panic!("no named threads: {view:#?}"));
    assert!(threads.contains("vcpu0"), "a vCPU thread: {threads}");
}
