//! density: N sandboxes of one image started at once; time until all said ready, and host
//! memory per sandbox (the drop in MemAvailable, and the launchers' PSS).

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
            for h in &mut held {
                h.wait_ready(is_ready_result, ready_timeout(mode) * n as u32)?;
            }
            let all_ready = start.elapsed();
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
