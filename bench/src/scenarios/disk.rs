//! disk: the `disk` workload on (a) the image root (overlayfs in a container, ext4 on
//! virtio-blk in a VM), (b) a volume (bind mount vs a second virtio-blk), (c) the host natively;
//! plus the union-fs copy-up cost: the first append to a large file that came with the image
//! (overlayfs copies the whole file up first), beside the first append to a one-byte one.
//! gVisor (runsc) runs the same workload on a writable copy of the image's root and on the same
//! volume as a bind mount: every file operation goes through its Sentry and its gofer. The
//! tuned QEMU microvm runs it on the same guest kernel, root disk and an ext4 image of the same
//! volume, so each VM figure has QEMU's block device beside it (`qemu-microvm/root`, `/volume`).

use super::compute::{number, run_native};
use super::{record, sandbox};
use crate::config::{Peer, Scenario};
use crate::error::BenchError;
use crate::peers::Peers;
use crate::process::Finished;
use crate::runner::{Bench, Sample};
use serde_json::json;
use std::path::{Path, PathBuf};

pub fn run(bench: &mut Bench, peers: &mut Peers) {
    let sizes = bench.config.sizes();
    let mib = sizes.disk_mib.to_string();
    let scratch = match scratch_dir() {
        Ok(d) => d,
        Err(e) => {
            bench.fail(Scenario::Disk, "all", &e);
            return;
        }
    };
    let vol = scratch.path().to_string_lossy().into_owned();
    for mode in bench.modes() {
        let root = sandbox(
            bench,
            mode,
            &[
                "sh",
                "-c",
                &format!("mkdir -p /bench-disk && exec sandbox-guest disk --path /bench-disk --mib {mib}"),
            ],
        );
        record(bench, &format!("{mode}/root"), Scenario::Disk, "workload", &root);
        bench.series(Scenario::Disk, &format!("{mode}/root"), |_| {
            let what = format!("{mode} disk on the image root");
            samples(&root.run()?.check(&what)?, &what)
        });
        let volume = sandbox(
            bench,
            mode,
            &["sandbox-guest", "disk", "--path", "/vol", "--mib", &mib],
        )
        .flag("--volume")
        .flag(format!("{vol}:/vol"));
        record(
            bench,
            &format!("{mode}/volume"),
            Scenario::Disk,
            "workload",
            &volume,
        );
        bench.series(Scenario::Disk, &format!("{mode}/volume"), |_| {
            let what = format!("{mode} disk on a volume");
            samples(&volume.run()?.check(&what)?, &what)
        });
    }
    runsc(bench, peers, scratch.path(), &mib);
    qemu(bench, peers, scratch.path(), &mib);
    super::record_native(bench, Scenario::Disk, &["disk", "--path", &vol, "--mib", &mib]);
    bench.series(Scenario::Disk, "native", |_| {
        let what = "native disk";
        samples(&run_native(&["disk", "--path", &vol, "--mib", &mib], what)?, what)
    });
    copy_up(bench, sizes.copy_up_mib);
}

/// qemu-microvm/root and qemu-microvm/volume: the same workload in the tuned QEMU microvm, on a
/// copy of VM mode's root disk and on an ext4 image of the volume directory (made as VM mode
/// makes its own, once, before the runs), the volume's drive with O_DIRECT where possible.
fn qemu(bench: &mut Bench, peers: &mut Peers, scratch: &Path, mib: &str) {
    let peer = Peer::QemuMicrovm;
    if !peers.usable(bench, peer, Scenario::Disk) {
        return;
    }
    let image_dir = match tempfile::Builder::new().prefix("bench-qemu-vol-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            let e = BenchError::io("cannot create a directory in", std::env::temp_dir(), e);
            bench.fail(Scenario::Disk, "qemu-microvm/volume", &e);
            return;
        }
    };
    let volume = image_dir.path().join("volume.ext4");
    let root_cmd: Vec<String> = [
        "sh",
        "-c",
        &format!("mkdir -p /bench-disk && exec sandbox-guest disk --path /bench-disk --mib {mib}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let vol_cmd: Vec<String> = ["sandbox-guest", "disk", "--path", "/vol", "--mib", mib]
        .iter()
        .map(|s| s.to_string())
        .collect();
    bench.series(Scenario::Disk, "qemu-microvm/root", |_| {
        let what = "qemu-microvm disk on the root disk";
        let (f, _) = peers.qemu_disk(peer, root_cmd.clone(), None)?;
        samples(&f, what)
    });
    let built = sandbox_disk::build_volume_from_dir(scratch, &volume);
    if let Err(e) = built {
        bench.fail(
            Scenario::Disk,
            "qemu-microvm/volume",
            &BenchError::run("the volume's ext4 image", e.to_string()),
        );
        return;
    }
    let mut options = String::new();
    bench.series(Scenario::Disk, "qemu-microvm/volume", |_| {
        let what = "qemu-microvm disk on a volume";
        let (f, o) = peers.qemu_disk(peer, vol_cmd.clone(), Some(&volume))?;
        options = o;
        samples(&f, what)
    });
    bench.subject(peer.name(), "").set(
        "disk scenario",
        format!(
            "root: a copy of VM mode's root disk; volume: an ext4 image of the volume directory \
             on `-drive ...,format=raw,if=none,{options} -device virtio-blk-device` (cache=none \
             needs a file system with O_DIRECT; tmpfs, the lab's, has none); the workload from a \
             plan disk of its own"
        ),
    );
}

/// runsc/root (a writable copy of the image's root, on the same disk as the volume) and
/// runsc/volume (the volume as a bind mount).
fn runsc(bench: &mut Bench, peers: &mut Peers, scratch: &Path, mib: &str) {
    let peer = Peer::Runsc;
    if !peers.usable(bench, peer, Scenario::Disk) {
        return;
    }
    let guest = sandbox_protocol::GUEST_PATH_IN_IMAGE;
    let root_copy = scratch.join("runsc-root");
    let made = peers
        .image()
        .ok_or_else(|| BenchError::run("runsc disk", "the image was not resolved"))
        .and_then(|image| Ok(image.flatten_into(&root_copy)?));
    let script = format!("mkdir -p /bench-disk && exec {guest} disk --path /bench-disk --mib {mib}");
    let root = made.and_then(|()| {
        let path = root_copy.display().to_string();
        peers.oci_setup(
            bench,
            Scenario::Disk,
            peer,
            "disk-root",
            Some(&["/bin/sh", "-c", &script]),
            |c| {
                c["root"]["path"] = path.into();
                c["root"]["readonly"] = false.into();
            },
        )
    });
    match root {
        Ok(run) => bench.series(Scenario::Disk, "runsc/root", |_| {
            let what = "runsc disk on a writable copy of the image root";
            samples(&peers.oci_run(&run)?, what)
        }),
        Err(e) => bench.fail(Scenario::Disk, "runsc/root", &e),
    }
    let vol = scratch.display().to_string();
    let volume = peers.oci_setup(
        bench,
        Scenario::Disk,
        peer,
        "disk-volume",
        Some(&[guest, "disk", "--path", "/vol", "--mib", mib]),
        |c| {
            if let Some(mounts) = c["mounts"].as_array_mut() {
                mounts.push(json!({
                    "destination": "/vol",
                    "type": "bind",
                    "source": vol,
                    "options": ["rbind", "rw"]
                }));
            }
        },
    );
    match volume {
        Ok(run) => bench.series(Scenario::Disk, "runsc/volume", |_| {
            let what = "runsc disk on a volume";
            samples(&peers.oci_run(&run)?, what)
        }),
        Err(e) => bench.fail(Scenario::Disk, "runsc/volume", &e),
    }
}

/// A directory for the volume and native runs, on the disk that holds the sandbox cache (not
/// /tmp, which may be RAM).
fn scratch_dir() -> Result<tempfile::TempDir, BenchError> {
    let base = sandbox_protocol::paths::sandbox_cache();
    std::fs::create_dir_all(&base).map_err(|e| BenchError::io("cannot create", &base, e))?;
    tempfile::Builder::new()
        .prefix("bench-disk-")
        .tempdir_in(&base)
        .map_err(|e| BenchError::io("cannot create a directory in", &base, e))
}

fn samples(f: &Finished, what: &str) -> Result<Vec<Sample>, BenchError> {
    let v = f.result(what)?;
    Ok(vec![
        Sample::higher(
            "seq_write_mib_s",
            "MiB/s",
            number(&v, &["sequential_write", "mib_per_second"], what)?,
        ),
        Sample::higher(
            "seq_read_mib_s",
            "MiB/s",
            number(&v, &["sequential_read", "mib_per_second"], what)?,
        ),
        Sample::higher(
            "rand_read_4k_iops",
            "IOPS",
            number(&v, &["random_read_4k", "iops"], what)?,
        ),
        Sample::higher(
            "rand_write_4k_iops",
            "IOPS",
            number(&v, &["random_write_4k", "iops"], what)?,
        ),
    ])
}

/// The image the copy-up runs use: the default image plus `/bench/big` (`mib` MiB) and
/// `/bench/small` (1 byte), imported once into the store.
fn copy_up_image(bench: &Bench, mib: u64) -> Result<String, BenchError> {
    let name = format!("bench-copy-up-{mib}m");
    let store = sandbox_image::Store::open_default()?;
    if store.list()?.iter().any(|i| i.name == name) {
        return Ok(name);
    }
    bench.say(&format!(
        "importing image {name} (the default image plus a {mib} MiB file)"
    ));
    let base = store.resolve(&bench.config.image)?;
    let dir = tempfile::Builder::new()
        .prefix("bench-image-")
        .tempdir()
        .map_err(|e| BenchError::io("cannot create a directory in", std::env::temp_dir(), e))?;
    let rootfs = dir.path().join("rootfs");
    base.flatten_into(&rootfs)?;
    write_files(&rootfs.join("bench"), mib)?;
    store.import(&rootfs, Some(&name))?;
    Ok(name)
}

fn write_files(dir: &Path, mib: u64) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io("cannot create", dir, e))?;
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let big = dir.join("big");
    let mut data = Vec::with_capacity((mib as usize) * block.len());
    for _ in 0..mib {
        data.extend_from_slice(&block);
    }
    std::fs::write(&big, &data).map_err(|e| BenchError::io("cannot write", &big, e))?;
    let small: PathBuf = dir.join("small");
    std::fs::write(&small, b"x").map_err(|e| BenchError::io("cannot write", &small, e))
}

fn copy_up(bench: &mut Bench, mib: u64) {
    let image = match copy_up_image(bench, mib) {
        Ok(i) => i,
        Err(e) => {
            bench.fail(Scenario::Disk, "copy-up", &e);
            return;
        }
    };
    // Timed inside the sandbox (busybox has no sub-second `date`; /proc/uptime has 10 ms steps),
    // so launch jitter does not drown the copy.
    let script = "read a _ < /proc/uptime; echo x >> /bench/small; read b _ < /proc/uptime; \
                  echo x >> /bench/big; read c _ < /proc/uptime; echo \"copy-up $a $b $c\"";
    for mode in bench.modes() {
        let mut cmd = sandbox(bench, mode, &["sh", "-c", script]);
        cmd.image = image.clone();
        record(
            bench,
            &format!("{mode}/copy-up"),
            Scenario::Disk,
            "workload",
            &cmd,
        );
        bench.series(Scenario::Disk, &format!("{mode}/copy-up"), |_| {
            let what = format!("{mode} first appends");
            let f = cmd.run()?.check(&what)?;
            let (small, big) = parse_copy_up(&f.stdout)
                .ok_or_else(|| BenchError::run(&what, format!("no copy-up line in {:?}", f.stdout)))?;
            Ok(vec![
                Sample::lower(format!("first_append_{mib}mib_ms"), "ms", big),
                Sample::lower("first_append_1b_ms", "ms", small),
            ])
        });
    }
}

/// (small, big) first-append times in ms from the `copy-up A B C` line (uptime seconds).
fn parse_copy_up(stdout: &str) -> Option<(f64, f64)> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("copy-up "))?;
    let t: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    match t[..] {
        [a, b, c] => Some(((b - a) * 1000.0, (c - b) * 1000.0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_up_line_parses() {
        let (small, big) = super::parse_copy_up("noise\ncopy-up 10.00 10.01 10.25\n").unwrap();
        assert!((small - 10.0).abs() < 1e-6 && (big - 240.0).abs() < 1e-6);
        assert!(super::parse_copy_up("copy-up 1 2").is_none());
    }
}
