//! The benchmark harness behind `sandbox bench`: runs each scenario (boot, memory, density,
//! disk, net, cpu, syscall) in each mode and on each peer with warm-ups, and writes
//! `report.md`, `report.json` and SVG charts. Every figure says where it was measured
//! (natively, or in the lab under TCG); ratios are only ever taken within one run.
//!
//! ```text
//! let mut config = Config::new(out_dir, sandbox_binary);
//! config.make_quick();
//! let report = sandbox_bench::run(config)?;   // also writes the files
//! ```

pub mod config;
pub mod environment;
pub mod error;
pub mod peers;
pub mod process;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod stats;

pub use config::{parse_list, Config, Mode, Peer, Scenario, Sizes};
pub use environment::{Environment, Place};
pub use error::BenchError;
pub use report::Report;
pub use stats::Stats;

use std::path::Path;
use std::time::Instant;

/// Runs the bench described by `config` and writes its report to `config.out`. Failing series
/// are recorded in the report (and its `failures`), not returned as errors; errors are for the
/// report itself (the output directory, writing files).
pub fn run(config: Config) -> Result<Report, BenchError> {
    let started = Instant::now();
    prepare_out(&config.out)?;
    let env = Environment::detect(&config.peers);
    let mut bench = runner::Bench::new(config, env);
    let mut peers = peers::Peers::default();
    let scenarios = bench.config.scenarios.clone();
    for scenario in scenarios {
        scenarios::run(&mut bench, &mut peers, scenario);
    }
    bench.finish_progress();
    let sizes = bench.config.sizes();
    let mut report = Report {
        schema_version: report::SCHEMA_VERSION,
        environment: bench.env,
        config: bench.config,
        sizes,
        ratios: report::derive::ratios(&bench.measurements),
        measurements: bench.measurements,
        targets: Vec::new(),
        notes: bench.notes,
        subjects: bench.subjects,
        failures: bench.failures,
        charts: Vec::new(),
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    report.targets = report::derive::targets(&report);
    write(&mut report)?;
    Ok(report)
}

/// Writes the charts, `report.json` and `report.md` of `report` into `report.config.out`.
pub fn write(report: &mut Report) -> Result<(), BenchError> {
    let out = report.config.out.clone();
    report.charts = report::charts::draw_all(report, &out)?;
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .map_err(|e| BenchError::io("cannot write", &json, e))?;
    let md = out.join("report.md");
    std::fs::write(&md, report::markdown::render(report))
        .map_err(|e| BenchError::io("cannot write", &md, e))?;
    Ok(())
}

/// Creates the output directory; one that exists must be empty or hold an earlier report.
fn prepare_out(out: &Path) -> Result<(), BenchError> {
    if out.exists() {
        let entries = std::fs::read_dir(out).map_err(|e| BenchError::io("cannot read", out, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "report.json" || name == "report.md" || name.ends_with(".svg") {
                continue;
            }
            return Err(BenchError::OutDirNotEmpty(out.to_path_buf()));
        }
        for entry in std::fs::read_dir(out)
            .map_err(|e| BenchError::io("cannot read", out, e))?
            .flatten()
        {
            let p = entry.path();
            std::fs::remove_file(&p).map_err(|e| BenchError::io("cannot remove", &p, e))?;
        }
        Ok(())
    } else {
        std::fs::create_dir_all(out).map_err(|e| BenchError::io("cannot create", out, e))
    }
}
