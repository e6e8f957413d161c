//! Image layer unpack: importing a rootfs tarball (500 files of 4 KiB in 20 directories, plus a
//! 4 MiB file) into a fresh image store — the layer is unpacked, digested and stored, and the
//! guest layer added.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::path::PathBuf;

mod common;

fn tarball(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("rootfs.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let add = |b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    let small = vec![0x42u8; 4096];
    for i in 0..500 {
        add(&mut builder, &format!("data/d{}/f{i}", i % 20), &small);
    }
    add(&mut builder, "data/big", &vec![0x17u8; 4 << 20]);
    builder.finish().unwrap();
    path
}

fn bench(c: &mut Criterion) {
    let work = tempfile::tempdir().unwrap();
    let tar = tarball(work.path());
    let guest = common::guest_binary();
    let mut group = c.benchmark_group("image");
    group.sample_size(10);
    group.bench_function("import_rootfs_tarball", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(work.path()).unwrap(),
            |home| {
                let store = sandbox_image::Store::open_with_guest(home.path(), &guest).unwrap();
                store.import(&tar, Some("bench")).unwrap();
                home
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
