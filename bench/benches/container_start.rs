//! Container start: `sandbox run --mode container -- true`, launch to exit, with the built
//! `sandbox` binary (target/<triple>/<profile>/sandbox, or $SANDBOX_BIN).

use criterion::{criterion_group, criterion_main, Criterion};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

fn bench(c: &mut Criterion) {
    let bin = common::sandbox_binary();
    let mut group = c.benchmark_group("container");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    group.bench_function("start_true", |b| {
        b.iter(|| {
            let status = Command::new(&bin)
                .args(["run", "--mode", "container", "--", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "sandbox run --mode container -- true failed");
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
