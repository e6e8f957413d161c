//! VM boot: `sandbox run --mode vm -- true`, launch to exit, measured by criterion where the VM
//! runs. On a host with hardware KVM that is here (`vm/boot_true_native`). On a host without it
//! (a PVM host) this very bench binary is shipped into the lab's L1 as its program (the way
//! `sandbox_lab::testing::delegate` runs tests there), with the real `sandbox` and
//! `sandbox-guest` beside it, and criterion measures the boots inside L1 against its nested KVM
//! (`vm/boot_true_in_lab_tcg`); its results and HTML come back into the host's criterion
//! directory. Every iteration is a real boot: criterion's interval describes real boots, never
//! a replay of a few samples.

use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use sandbox_vmm::kvm_kind::{detect, KvmKind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

/// Where the bench's files go inside L1.
const L1_DIR: &str = "/opt/bench";
const L1_CRITERION: &str = "/root/criterion";

fn boot_true(c: &mut Criterion, in_lab: bool) {
    let bin = common::sandbox_binary();
    let mut group: BenchmarkGroup<_> = c.benchmark_group("vm");
    // One boot per iteration, the same number in every sample: natively ~0.1 s each, in the lab
    // seconds each (10 samples of one boot then take ~30 s).
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    if in_lab {
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(30))
            .nresamples(20_000);
    } else {
        group.measurement_time(Duration::from_secs(5));
    }
    let name = if in_lab {
        "boot_true_in_lab_tcg"
    } else {
        "boot_true_native"
    };
    group.bench_function(name, |b| {
        b.iter(|| {
            let status = Command::new(&bin)
                .args(["run", "--mode", "vm", "--", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "sandbox run --mode vm -- true failed");
        })
    });
    group.finish();
}

/// The host's criterion directory: `$CRITERION_HOME`, else `<target dir>/criterion` (the
/// outermost directory above this binary holding cargo's CACHEDIR.TAG).
fn host_criterion_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("criterion");
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .filter(|d| d.join("CACHEDIR.TAG").is_file())
        .last()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("criterion")
}

/// Runs this bench binary inside the lab's L1 with the arguments cargo gave it; returns its
/// exit status.
fn run_in_lab() -> i32 {
    let exe = std::env::current_exe().unwrap();
    let sandbox = common::sandbox_binary();
    let guest = common::guest_binary();
    let out = host_criterion_dir();
    eprintln!(
        "vm_boot: this host's KVM is not hardware: running criterion inside the lab's L1 \
         (nested KVM under TCG); results go to {}",
        out.display()
    );
    let status = Command::new(&sandbox)
        // The lab ships this bench binary as L1's program; the real sandbox goes beside it.
        .env("SANDBOX_BIN", &exe)
        .args(["lab", "--timeout", "1500", "--include"])
        .arg(format!("{}:{L1_DIR}/sandbox", sandbox.display()))
        .arg("--include")
        .arg(format!("{}:{L1_DIR}/sandbox-guest", guest.display()))
        .args(["--env", &format!("SANDBOX_BIN={L1_DIR}/sandbox")])
        .args(["--env", &format!("CRITERION_HOME={L1_CRITERION}")])
        .arg("--export")
        .arg(format!("{L1_CRITERION}:{}", out.display()))
        .arg("--")
        .args(std::env::args_os().skip(1))
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot start {} lab: {e}", sandbox.display()));
    status.code().unwrap_or(1)
}

fn main() {
    let hardware = matches!(detect(), KvmKind::Hardware { .. });
    if !hardware {
        std::process::exit(run_in_lab());
    }
    let in_lab = Path::new(sandbox_bench::environment::LAB_MARKER).exists();
    let mut c = Criterion::default().configure_from_args();
    boot_true(&mut c, in_lab);
    c.final_summary();
}
