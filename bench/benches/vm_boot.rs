//! VM boot: `sandbox run --mode vm -- true`, launch to exit. Natively where the host has
//! hardware KVM; otherwise each iteration goes through the lab is far too slow, so one
//! `sandbox lab -- bench --scenario boot --modes vm` run measures boots inside L1 (nested KVM
//! under TCG) and criterion is fed those measured times (`iter_custom`). The bench's name says
//! which.

use criterion::{criterion_group, criterion_main, Criterion};
use sandbox_vmm::kvm_kind::{detect, KvmKind};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

fn native(c: &mut Criterion) {
    let bin = common::sandbox_binary();
    let mut group = c.benchmark_group("vm");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.bench_function("boot_true_native", |b| {
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

/// Boot times (launch to exit of `true`) measured in the lab by the bench harness.
fn lab_samples() -> Vec<Duration> {
    let bin = common::sandbox_binary();
    let out = tempfile::tempdir().unwrap();
    let export = format!("/root/vm-boot:{}", out.path().display());
    eprintln!("vm_boot: measuring VM boots inside the lab (this host's KVM is not hardware)...");
    let status = Command::new(&bin)
        .args(["lab", "--timeout", "500", "--export", &export, "--"])
        .args(["bench", "--scenario", "boot", "--modes", "vm", "--peers", "none"])
        .args(["--runs", "5", "--out", "/root/vm-boot"])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the lab's bench run failed");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap()).unwrap();
    let samples: Vec<Duration> = report["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["subject"] == "vm" && m["metric"] == "true_wall_ms")
        .expect("the lab run measured no VM boot")["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Duration::from_secs_f64(v.as_f64().unwrap() / 1000.0))
        .collect();
    assert!(!samples.is_empty());
    samples
}

fn in_lab(c: &mut Criterion) {
    let samples = lab_samples();
    let mut group = c.benchmark_group("vm");
    group.sample_size(10).warm_up_time(Duration::from_millis(1));
    let mut next = 0usize;
    group.bench_function("boot_true_in_lab_tcg", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += samples[next % samples.len()];
                next += 1;
            }
            total
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    match detect() {
        KvmKind::Hardware { .. } => native(c),
        _ => in_lab(c),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
