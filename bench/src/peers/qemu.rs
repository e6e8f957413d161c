//! QEMU `-M microvm` (Debian's qemu-system-x86) booting the guest kernel of VM mode and a root
//! disk of the same image, with busybox `sh` as init printing a ready line. `reboot=t` and
//! `-no-reboot` make QEMU exit as soon as the guest reboots; stdin is /dev/null (QEMU stalls on
//! a terminal); `-L` names the directory holding `bios-microvm.bin`. The shared cached disk is
//! attached read-only and mounted `ro` (busybox's `sh` writes nothing). `acpi=off` makes QEMU
//! list the virtio-mmio devices on the kernel command line (appended at its end, so init's
//! arguments go without `--`: bare words without `=` or `.` reach init), as the guest kernel
//! has no ACPI.

use crate::error::BenchError;
use crate::process::{Held, Memory};
use crate::runner::Bench;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where Debian (and the lab, given `--include /usr/share/qemu:/usr/share/qemu`) has the BIOS.
const BIOS_DIRS: &[&str] = &["/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu"];
/// The guest's ready line; the command line spells it differently, so the kernel's echo of its
/// command line does not match.
const READY: &str = "sbx-42-ready";
/// How long QEMU may take to the ready line (under TCG in the lab, VM boots take seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Guest RAM, as VM mode's default.
const MEMORY_MIB: u32 = 128;

#[derive(Default)]
pub struct Qemu {
    disk: Option<PathBuf>,
    kernel: Option<PathBuf>,
    bios_dir: Option<PathBuf>,
}

impl Qemu {
    pub fn prepare(&mut self, bench: &mut Bench, rootfs: &Path, content_key: &str) -> Result<(), BenchError> {
        if self.disk.is_some() {
            return Ok(());
        }
        let what = "qemu-microvm";
        if !bench.env.place.can_boot_vms() {
            return Err(BenchError::run(
                what,
                format!(
                    "this host's KVM ({}) cannot boot stock kernels: run the bench in `sandbox lab`",
                    bench.env.kvm_kind
                ),
            ));
        }
        let kernel = sandbox_kernel::cached()
            .ok_or_else(|| BenchError::run(what, "no guest kernel is built: run `sandbox kernel build`"))?;
        let bios_dir = BIOS_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("bios-microvm.bin").exists())
            .ok_or_else(|| {
                BenchError::run(
                    what,
                    "bios-microvm.bin not found in /usr/share/qemu: run `apt-get install qemu-system-x86` \
                     (in the lab, pass `--include /usr/share/qemu:/usr/share/qemu`)",
                )
            })?;
        bench.say("building the QEMU peer's root disk");
        let disk = sandbox_disk::build_base(rootfs, &format!("bench-{content_key}"))?;
        self.disk = Some(disk);
        self.kernel = Some(kernel.bzimage);
        self.bios_dir = Some(bios_dir);
        Ok(())
    }

    fn command(&self, hold_seconds: u32) -> Result<Command, BenchError> {
        let (Some(disk), Some(kernel), Some(bios)) = (&self.disk, &self.kernel, &self.bios_dir) else {
            return Err(BenchError::run("qemu-microvm", "not prepared"));
        };
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.arg("-M")
            .arg("microvm,acpi=off")
            .args(["-accel", "kvm", "-cpu", "host", "-smp", "1"])
            .args(["-m", &MEMORY_MIB.to_string()])
            .args(["-nodefaults", "-no-user-config", "-no-reboot"])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .arg("-L")
            .arg(bios)
            .arg("-kernel")
            .arg(kernel)
            .arg("-drive")
            .arg(format!(
                "id=root,file={},format=raw,if=none,readonly=on",
                disk.display()
            ))
            .args(["-device", "virtio-blk-device,drive=root"])
            .arg("-append")
            .arg(format!(
                "console=ttyS0 quiet root=/dev/vda ro reboot=t panic=-1 init=/bin/sh -c \
                 \"echo sbx-$((6*7))-ready; sleep {hold_seconds}; reboot -f\""
            ));
        Ok(cmd)
    }

    pub fn boot(&mut self) -> Result<(Duration, Duration), BenchError> {
        let mut held = Held::spawn(&mut self.command(0)?, "qemu-microvm boot", None)?;
        let ready = held.wait_ready(|l| l.contains(READY), READY_TIMEOUT)?;
        let f = held.finish()?;
        Ok((ready, f.wall))
    }

    pub fn memory(&mut self) -> Result<Memory, BenchError> {
        let mut held = Held::spawn(&mut self.command(30)?, "qemu-microvm memory", None)?;
        held.wait_ready(|l| l.contains(READY), READY_TIMEOUT)?;
        // Let the guest's init settle as the sandboxes' `ready` does.
        let m = Memory::of(held.pid(), Some(u64::from(MEMORY_MIB) << 20));
        let _ = held.terminate(Duration::from_secs(5));
        m
    }
}
