//! What the report derives from the measurements of one run: ratios between modes, to native
//! and to the peers (medians of the same run), and the targets.

use super::{Measurement, Ratio, Report, Target};
use crate::config::Scenario;

/// The subject pairs compared wherever both were measured (numerator, denominator).
const PAIRS: &[(&str, &str)] = &[
    ("vm", "container"),
    ("container", "native"),
    ("vm", "native"),
    ("runsc", "native"),
    ("container", "crun"),
    ("container", "runc"),
    ("container", "runsc"),
    ("runsc", "container"),
    ("runsc", "vm"),
    ("vm", "qemu-microvm"),
    ("vm", "qemu-microvm-default"),
    ("qemu-microvm-default", "qemu-microvm"),
    ("container/root", "native"),
    ("container/volume", "native"),
    ("vm/root", "native"),
    ("vm/volume", "native"),
    ("vm/root", "container/root"),
    ("vm/volume", "container/volume"),
    ("vm/copy-up", "container/copy-up"),
    ("vm/root", "qemu-microvm/root"),
    ("vm/volume", "qemu-microvm/volume"),
    ("qemu-microvm/root", "native"),
    ("qemu-microvm/volume", "native"),
    ("runsc/root", "native"),
    ("runsc/volume", "native"),
    ("runsc/root", "container/root"),
    ("runsc/volume", "container/volume"),
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

/// The VM-boot target: our VM's ready at most this fraction of the tuned QEMU microvm's, in the
/// same run (the figure: a purpose-built VMM should beat a general one by 30 %).
pub const VM_BOOT_FACTOR: f64 = 0.7;

/// The three targets, judged on this run's medians, each comparing one metric measured
/// the same way on both sides.
pub fn targets(report: &Report) -> Vec<Target> {
    let median = |scenario, subject: &str, metric: &str| {
        report.find(scenario, subject, metric).map(|m| m.stats.median)
    };
    let judge = |measured: Option<f64>, limit: Option<f64>| match (measured, limit) {
        (Some(m), Some(l)) => Some(m <= l),
        _ => None,
    };
    let container = median(Scenario::Boot, "container", "true_wall_ms");
    let crun = median(Scenario::Boot, "crun", "true_wall_ms");
    let vm = median(Scenario::Boot, "vm", "ready_wall_ms");
    let qemu = median(Scenario::Boot, "qemu-microvm", "ready_wall_ms").map(|q| q * VM_BOOT_FACTOR);
    let overhead = median(Scenario::Memory, "vm", "vmm_overhead_rss_mib");
    vec![
        Target {
            name: "container-start".into(),
            description: "container `true`, launch to exit ≤ crun's median for the same `/bin/true`".into(),
            unit: "ms".into(),
            measured: container,
            limit: crun,
            met: judge(container, crun),
            note: "both true_wall_ms: the harness's wall clock from spawn to exit of /bin/true (ours: `sandbox run --mode container -- true`; crun: `crun run` of a bundle of the same image)".into(),
        },
        Target {
            name: "vm-boot".into(),
            description: format!(
                "cold VM, launch to ready ≤ {VM_BOOT_FACTOR} × the tuned QEMU microvm's median, same kernel, root disk, plan and init"
            ),
            unit: "ms".into(),
            measured: vm,
            limit: qemu,
            met: judge(vm, qemu),
            note: format!(
                "both ready_wall_ms: the harness's wall clock from spawn to the `sandbox-guest ready` line on the VMM's stdout; the bound is {VM_BOOT_FACTOR} × qemu-microvm's (its tuned configuration; qemu-microvm-default is reported beside it)"
            ),
        },
        Target {
            name: "vmm-overhead".into(),
            description: format!("VMM memory beyond guest RAM ≤ {VMM_OVERHEAD_LIMIT_MIB} MiB (Firecracker's specification; aim 3)"),
            unit: "MiB".into(),
            measured: overhead,
            limit: Some(VMM_OVERHEAD_LIMIT_MIB),
            met: judge(overhead, Some(VMM_OVERHEAD_LIMIT_MIB)),
            note: "RSS of the launcher's process tree minus the guest RAM mappings, sampled at ready".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::environment::{Environment, Place};
    use crate::report::{Better, Measurement, SCHEMA_VERSION};
    use crate::stats::Stats;

    fn measurement(scenario: Scenario, subject: &str, metric: &str, median: f64) -> Measurement {
        Measurement {
            scenario,
            subject: subject.into(),
            metric: metric.into(),
            unit: "ms".into(),
            better: Better::Lower,
            place: Place::LabTcg,
            samples: vec![median],
            stats: Stats::of(&[median]).unwrap(),
        }
    }

    fn report(measurements: Vec<Measurement>) -> Report {
        let config = Config::new("out".into(), "sandbox".into());
        Report {
            schema_version: SCHEMA_VERSION,
            environment: Environment::detect(&[]),
            sizes: config.sizes(),
            config,
            ratios: ratios(&measurements),
            measurements,
            targets: Vec::new(),
            notes: Vec::new(),
            subjects: Vec::new(),
            failures: Vec::new(),
            charts: Vec::new(),
            duration_seconds: 0.0,
        }
    }

    #[test]
    fn targets_compare_like_metrics_and_the_vm_bound_is_a_fraction_of_tuned_qemu() {
        let r = report(vec![
            // The launcher's own ready phase never decides a target.
            measurement(Scenario::Boot, "container", "ready_ms", 1.0),
            measurement(Scenario::Boot, "container", "true_wall_ms", 12.0),
            measurement(Scenario::Boot, "crun", "true_wall_ms", 10.0),
            measurement(Scenario::Boot, "vm", "ready_ms", 100.0),
            measurement(Scenario::Boot, "vm", "ready_wall_ms", 1500.0),
            measurement(Scenario::Boot, "qemu-microvm", "ready_wall_ms", 2000.0),
            measurement(Scenario::Boot, "qemu-microvm-default", "ready_wall_ms", 3000.0),
        ]);
        let t = targets(&r);
        let container = &t[0];
        assert_eq!((container.measured, container.limit), (Some(12.0), Some(10.0)));
        assert_eq!(container.met, Some(false));
        let vm = &t[1];
        assert_eq!(vm.measured, Some(1500.0));
        assert!((vm.limit.unwrap() - 1400.0).abs() < 1e-9, "{vm:?}");
        assert_eq!(
            vm.met,
            Some(false),
            "1500 is under qemu's 2000 but not under 0.7 of it"
        );
        assert_eq!(t[2].met, None, "no memory scenario in this run");
        let gap = r
            .ratios
            .iter()
            .find(|x| x.numerator == "qemu-microvm-default" && x.denominator == "qemu-microvm")
            .expect("the configuration gap is a ratio");
        assert!((gap.ratio - 1.5).abs() < 1e-9);
    }
}
