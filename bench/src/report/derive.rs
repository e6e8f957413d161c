//! What the report derives from the measurements of one run: ratios between modes, to native
//! and to the peers (medians of the same run), and the targets.

use super::{Measurement, Ratio, Report, Target};
use crate::config::Scenario;

/// The subject pairs compared wherever both were measured (numerator, denominator).
const PAIRS: &[(&str, &str)] = &[
    ("vm", "container"),
    ("container", "native"),
    ("vm", "native"),
    ("container", "crun"),
    ("container", "runc"),
    ("vm", "qemu-microvm"),
    ("container/root", "native"),
    ("container/volume", "native"),
    ("vm/root", "native"),
    ("vm/volume", "native"),
    ("vm/root", "container/root"),
    ("vm/volume", "container/volume"),
    ("vm/copy-up", "container/copy-up"),
];

/// Ratios of medians for every pair in [`PAIRS`] that both have a metric.
pub fn ratios(measurements: &[Measurement]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for m in measurements {
        for (num, den) in PAIRS {
            if m.subject != *num {
                continue;
            }
            let Some(d) = measurements
                .iter()
                .find(|d| d.scenario == m.scenario && d.metric == m.metric && d.subject == *den)
            else {
                continue;
            };
            if d.stats.median != 0.0 {
                out.push(Ratio {
                    scenario: m.scenario,
                    metric: m.metric.clone(),
                    numerator: num.to_string(),
                    denominator: den.to_string(),
                    ratio: m.stats.median / d.stats.median,
                });
            }
        }
    }
    out
}

/// Firecracker's VMM memory overhead specification, MiB.
pub const VMM_OVERHEAD_LIMIT_MIB: f64 = 5.0;

/// The three targets, judged on this run's medians.
pub fn targets(report: &Report) -> Vec<Target> {
    let median = |scenario, subject: &str, metric: &str| {
        report.find(scenario, subject, metric).map(|m| m.stats.median)
    };
    let judge = |measured: Option<f64>, limit: Option<f64>| match (measured, limit) {
        (Some(m), Some(l)) => Some(m <= l),
        _ => None,
    };
    let container = median(Scenario::Boot, "container", "ready_ms");
    let crun = median(Scenario::Boot, "crun", "true_wall_ms");
    let vm = median(Scenario::Boot, "vm", "ready_ms");
    let qemu = median(Scenario::Boot, "qemu-microvm", "ready_ms");
    let overhead = median(Scenario::Memory, "vm", "vmm_overhead_rss_mib");
    vec![
        Target {
            name: "container-start".into(),
            description: "container start (launch to the workload's ready) ≤ crun's median (launch to exit of /bin/true)".into(),
            unit: "ms".into(),
            measured: container,
            limit: crun,
            met: judge(container, crun),
            note: "ours from the launcher's ready phase; crun from the harness's wall clock; boot/true_wall_ms compares the same `true` run of both".into(),
        },
        Target {
            name: "vm-boot".into(),
            description: "VM boot to ready ≤ QEMU microvm's median on the same kernel and root disk".into(),
            unit: "ms".into(),
            measured: vm,
            limit: qemu,
            met: judge(vm, qemu),
            note: "ours: the launcher's ready phase; QEMU: its start to the guest's ready line on the serial console".into(),
        },
        Target {
            name: "vmm-overhead".into(),
            description: format!("VMM memory beyond guest RAM ≤ {VMM_OVERHEAD_LIMIT_MIB} MiB (Firecracker's specification; aim 3)"),
            unit: "MiB".into(),
            measured: overhead,
            limit: Some(VMM_OVERHEAD_LIMIT_MIB),
            met: judge(overhead, Some(VMM_OVERHEAD_LIMIT_MIB)),
            note: "RSS of the launcher's process tree minus its largest mapping (guest RAM), sampled at ready".into(),
        },
    ]
}
