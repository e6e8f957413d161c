//! density: N sandboxes of one image started at once; time until all said ready, the start
//! rate (N over that time, sandboxes per second: Firecracker reports 150 microVMs per second
//! per host), each one's spawn-to-ready time (median and p99), and host memory per sandbox
//! (the drop in MemAvailable, and the launchers' PSS).

use super::{ready_timeout, sandbox, HOLD};
use crate::config::{Mode, Scenario};
use crate::environment::meminfo_kib;
use crate::error::BenchError;
use crate::process::{is_ready_result, mib, ms, Held};
use crate::runner::{Bench, Sample};
use std::time::{Duration, Instant};

pub fn run(bench: &mut Bench) {
    let sizes = bench.config.sizes();
    for mode in bench.modes() {
        let n = match mode {
            Mode::Container => sizes.density_container,
            Mode::Vm => sizes.density_vm,
        };
        let cmd = sandbox(bench, mode, HOLD);
        let subject = format!("{mode}/x{n}");
        bench.series(Scenario::Density, &subject, |_| {
            let before = mem_available()?;
            let start = Instant::now();
            let mut held: Vec<Held> = Vec::with_capacity(n);
            for _ in 0..n {
                held.push(cmd.spawn()?);
            }
            let mut each: Vec<f64> = Vec::with_capacity(n);
            for h in &mut held {
                each.push(ms(h.wait_ready(is_ready_result, ready_timeout(mode) * n as u32)?));
            }
            let all_ready = start.elapsed();
            each.sort_by(f64::total_cmp);
            let quantile = |q: f64| each[((each.len() as f64 * q).ceil() as usize).clamp(1, each.len()) - 1];
            let after = mem_available()?;
            let mut pss = 0;
            for h in &held {
                pss += super::memory::tree_memory(h.pid(), mode)?.pss;
            }
            for h in &mut held {
                h.terminate(Duration::from_secs(15))?;
            }
            Ok(vec![
                Sample::lower("all_ready_ms", "ms", ms(all_ready)),
                Sample::higher(
                    "start_rate_per_s",
                    "sandboxes/s",
                    n as f64 / all_ready.as_secs_f64().max(1e-9),
                ),
                Sample::lower("ready_p50_ms", "ms", quantile(0.5)),
                Sample::lower("ready_p99_ms", "ms", quantile(0.99)),
                Sample::lower(
                    "host_memory_per_sandbox_mib",
                    "MiB",
                    mib(before.saturating_sub(after)) / n as f64,
                ),
                Sample::lower("launcher_pss_per_sandbox_mib", "MiB", mib(pss) / n as f64),
            ])
        });
    }
}

/// MemAvailable in bytes.
fn mem_available() -> Result<u64, BenchError> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| BenchError::io("cannot read", "/proc/meminfo", e))?;
    meminfo_kib(&text, "MemAvailable")
        .map(|k| k * 1024)
        .ok_or_else(|| BenchError::run("reading /proc/meminfo", "no MemAvailable line"))
}
