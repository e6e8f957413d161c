//! QEMU `-M microvm` (Debian's qemu-system-x86) doing exactly the guest work VM mode does: the
//! same guest kernel, a per-run writable copy of the same cached root disk, the same plan on a
//! read-only plan disk after it (`sandbox.plan=/dev/vdb`), and `sandbox-guest init` as init. The
//! workload signals ready the way it does in our VM — `sandbox-guest ready` writes to the
//! boot/exit port (an unassigned port in QEMU: the same one exit to the VMM) and prints its
//! `{"workload":"ready"}` line on the serial console — and the harness times both VMMs from
//! spawn to that line on their stdout (`ready_wall_ms`).
//!
//! Two configurations, both reported:
//! - [`Peer::QemuMicrovm`] as a speed-minded user runs it: QEMU's documented fast microvm
//!   options (`x-option-roms=off,pit=off,pic=off,rtc=off`, `virtio-mmio.force-legacy=off`), the
//!   kernel parameters VM mode boots with ([`FAST_BOOT_FLAGS`], `reboot=t` for `reboot=k`: QEMU's
//!   microvm has no keyboard controller to reset through), and the faster of the bzImage and
//!   the PVH vmlinux, measured in the same run before the series;
//! - [`Peer::QemuMicrovmDefault`]: the machine's defaults (PIT, PIC, RTC, option ROMs, legacy
//!   virtio-mmio), the bzImage and a minimal command line.
//!
//! Both end the way our VM does: init reports the status, syncs and reboots; `reboot=t` (a
//! triple fault) with `-no-reboot` makes QEMU exit at once. stdin is /dev/null (QEMU stalls on a
//! terminal); `-L` names the directory holding `bios-microvm.bin`. `acpi=off` makes QEMU append
//! `virtio_mmio.device=...` for each device to the kernel command line (the guest kernel has no
//! ACPI) — at its end, so the command line has no `--`: init is `sandbox-guest` as PID 1, which
//! is init without a workload name.

use crate::config::Peer;
use crate::error::BenchError;
use crate::process::{is_ready_result, ms, run_to_end, tail, Finished, Held, Memory};
use crate::report::SubjectSetup;
use crate::runner::Bench;
use sandbox_image::ResolvedImage;
use sandbox_protocol::{encode_plan_block, exit_device, Plan, ReadyChannel};
use sandbox_vmm::boot::cmdline::FAST_BOOT_FLAGS;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where Debian (and the lab, given `--include /usr/share/qemu:/usr/share/qemu`) has the BIOS.
const BIOS_DIRS: &[&str] = &["/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu"];
/// How long QEMU may take to the ready line (under TCG in the lab, VM boots take seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Guest RAM: VM mode's default.
pub const MEMORY_MIB: u64 = sandbox_core::vm::DEFAULT_MEMORY_MIB;
/// The guest's names for the root and plan disks: QEMU gives the first `-device` the first
/// virtio-mmio slot, as VM mode orders them (root, then plan).
const ROOT_DEVICE: &str = "/dev/vda";
const PLAN_DEVICE: &str = "/dev/vdb";
/// How many boots of each kernel format decide the tuned configuration's kernel (after one
/// discarded boot), and with `--quick`.
const KERNEL_PROBE_BOOTS: usize = 3;
const KERNEL_PROBE_BOOTS_QUICK: usize = 2;

/// What the guest runs: each has its own plan disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `sandbox-guest ready`, the boot scenario's workload.
    Ready,
    /// `true`, the boot scenario's launch-to-exit run.
    True,
    /// Ready, then sleep until terminated (the memory scenario).
    Hold,
}

impl Work {
    fn command(self) -> Vec<String> {
        let words: &[&str] = match self {
            Work::Ready => &["sandbox-guest", "ready"],
            Work::True => &["true"],
            Work::Hold => crate::scenarios::HOLD,
        };
        words.iter().map(|s| s.to_string()).collect()
    }

    fn name(self) -> &'static str {
        match self {
            Work::Ready => "ready",
            Work::True => "true",
            Work::Hold => "hold",
        }
    }
}

/// The two ways the guest kernel can be handed to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// The compressed bzImage (Linux boot protocol; the kernel decompresses itself).
    BzImage,
    /// The uncompressed ELF vmlinux, entered at its PVH entry point (what VM mode boots).
    Pvh,
}

impl KernelFormat {
    pub fn describe(self) -> &'static str {
        match self {
            KernelFormat::BzImage => "bzImage",
            KernelFormat::Pvh => "vmlinux (PVH entry)",
        }
    }
}

struct Prepared {
    /// The cached root disk VM mode copies for each VM (the same file).
    base_disk: PathBuf,
    bzimage: PathBuf,
    vmlinux: PathBuf,
    bios_dir: PathBuf,
    /// Per-run root copies and the plan disks, beside the disk cache (reflinks where possible).
    work: tempfile::TempDir,
    plans: Vec<(Work, PathBuf)>,
    /// The plan the `ready` run's guest reads, for the report.
    ready_plan: Plan,
}

/// Both QEMU configurations (they share the disks and plans).
#[derive(Default)]
pub struct Qemu {
    prepared: Option<Prepared>,
    /// The tuned configuration's kernel, once measured.
    tuned_kernel: Option<KernelFormat>,
    counter: u64,
}

/// The kernel command line of a configuration (QEMU appends the virtio-mmio devices).
pub fn kernel_cmdline(peer: Peer) -> String {
    let tail = [
        format!("root={ROOT_DEVICE}"),
        "rw".to_string(),
        format!("{}={PLAN_DEVICE}", sandbox_protocol::PLAN_CMDLINE_KEY),
        format!("init={}", sandbox_protocol::GUEST_PATH_IN_IMAGE),
    ];
    let mut words: Vec<String> = Vec::new();
    if peer == Peer::QemuMicrovm {
        words.push("console=ttyS0".into());
        // VM mode's flags, but the reboot: QEMU's microvm has no i8042 to reset through; a
        // triple fault (reboot=t) with -no-reboot ends QEMU at once.
        words.extend(FAST_BOOT_FLAGS.iter().map(|f| {
            if f.starts_with("reboot=") {
                "reboot=t".to_string()
            } else {
                f.to_string()
            }
        }));
        words.push("quiet".into());
        words.extend(tail.iter().take(2).cloned());
        words.push("rootfstype=ext4".into());
        words.extend(tail.iter().skip(2).cloned());
    } else {
        // The bench's command line before the tuned peer existed, with the plan and init.
        words.extend(["console=ttyS0", "quiet"].map(String::from));
        words.extend(tail.iter().take(2).cloned());
        words.extend(["reboot=t", "panic=-1"].map(String::from));
        words.extend(tail.iter().skip(2).cloned());
    }
    words.join(" ")
}

/// `-M` and `-global` options of a configuration.
pub fn machine_args(peer: Peer) -> Vec<String> {
    match peer {
        Peer::QemuMicrovm => vec![
            "-M".into(),
            "microvm,acpi=off,x-option-roms=off,pit=off,pic=off,rtc=off".into(),
            "-global".into(),
            "virtio-mmio.force-legacy=off".into(),
        ],
        _ => vec!["-M".into(), "microvm,acpi=off".into()],
    }
}

/// The plan VM mode's guest reads for `command`: what `sandbox run --mode vm` assembles from the
/// image, as the VM backend and the VMM finish it (VM mode, ready through the boot/exit port,
/// no console input).
pub fn vm_plan(image: &ResolvedImage, command: Vec<String>, id: &str) -> Result<Plan, BenchError> {
    let spec = sandbox_spec::SandboxSpec {
        image: image.name.clone(),
        command,
        ..sandbox_spec::SandboxSpec::default()
    };
    let assembled = sandbox_core::plan::assemble(
        sandbox_core::plan::Source::Spec { spec: &spec, image },
        sandbox_core::Mode::Vm,
        id,
    )
    .map_err(|e| BenchError::run("assembling the QEMU peer's plan", e.to_string()))?;
    let mut plan = assembled.plan;
    plan.mode = sandbox_protocol::Mode::Vm;
    plan.ready = ReadyChannel::Port(exit_device::PORT);
    plan.stdin = false;
    Ok(plan)
}

impl Qemu {
    pub fn prepare(&mut self, bench: &mut Bench, image: &ResolvedImage) -> Result<(), BenchError> {
        if self.prepared.is_some() {
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
        bench.say("finding the root disk VM mode boots, for the QEMU peers");
        let base_disk = sandbox_core::vm::disks::root_disk(image)
            .map_err(|e| BenchError::run("the QEMU peers' root disk", e.to_string()))?;
        let cache = sandbox_protocol::paths::sandbox_cache();
        std::fs::create_dir_all(&cache).map_err(|e| BenchError::io("cannot create", &cache, e))?;
        let work = tempfile::Builder::new()
            .prefix("bench-qemu-")
            .tempdir_in(&cache)
            .map_err(|e| BenchError::io("cannot create a directory in", &cache, e))?;
        let id = format!("q{:07x}", std::process::id() & 0xfff_ffff);
        let mut plans = Vec::new();
        let mut ready_plan = None;
        for work_kind in [Work::Ready, Work::True, Work::Hold] {
            let plan = vm_plan(image, work_kind.command(), &id)?;
            let path = work.path().join(format!("plan-{}.img", work_kind.name()));
            std::fs::write(&path, encode_plan_block(&plan))
                .map_err(|e| BenchError::io("cannot write", &path, e))?;
            plans.push((work_kind, path));
            if work_kind == Work::Ready {
                ready_plan = Some(plan);
            }
        }
        self.prepared = Some(Prepared {
            base_disk,
            bzimage: kernel.bzimage,
            vmlinux: kernel.vmlinux,
            bios_dir,
            work,
            plans,
            ready_plan: ready_plan.unwrap_or_else(|| Plan::new(sandbox_protocol::Mode::Vm, Vec::new())),
        });
        Ok(())
    }

    fn prepared(&self) -> Result<&Prepared, BenchError> {
        self.prepared
            .as_ref()
            .ok_or_else(|| BenchError::run("qemu-microvm", "not prepared"))
    }

    /// The kernel format `peer` boots: the default configuration the bzImage, the tuned one the
    /// faster format (see [`Qemu::choose_kernel`]).
    fn format(&self, peer: Peer) -> KernelFormat {
        match peer {
            Peer::QemuMicrovm => self.tuned_kernel.unwrap_or(KernelFormat::Pvh),
            _ => KernelFormat::BzImage,
        }
    }

    /// QEMU's arguments for one run of `peer` with `format`, booting `root` and `work`'s plan.
    fn argv(
        &self,
        peer: Peer,
        format: KernelFormat,
        root: &Path,
        work: Work,
    ) -> Result<Vec<String>, BenchError> {
        let p = self.prepared()?;
        let plan = p
            .plans
            .iter()
            .find(|(w, _)| *w == work)
            .map(|(_, path)| path.clone())
            .ok_or_else(|| BenchError::run(peer.name(), "its plan disk was not written"))?;
        self.argv_with_plan(peer, format, root, &plan)
    }

    fn argv_with_plan(
        &self,
        peer: Peer,
        format: KernelFormat,
        root: &Path,
        plan: &Path,
    ) -> Result<Vec<String>, BenchError> {
        let p = self.prepared()?;
        let kernel = match format {
            KernelFormat::BzImage => &p.bzimage,
            KernelFormat::Pvh => &p.vmlinux,
        };
        let mut a: Vec<String> = vec!["qemu-system-x86_64".into()];
        a.extend(machine_args(peer));
        a.extend(["-accel", "kvm", "-cpu", "host", "-smp", "1", "-m"].map(String::from));
        a.push(MEMORY_MIB.to_string());
        a.extend(
            [
                "-nodefaults",
                "-no-user-config",
                "-no-reboot",
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "stdio",
                "-L",
            ]
            .map(String::from),
        );
        a.push(p.bios_dir.display().to_string());
        a.push("-kernel".into());
        a.push(kernel.display().to_string());
        a.push("-append".into());
        a.push(kernel_cmdline(peer));
        a.push("-drive".into());
        a.push(format!("id=root,file={},format=raw,if=none", root.display()));
        a.extend(["-device", "virtio-blk-device,drive=root"].map(String::from));
        a.push("-drive".into());
        a.push(format!(
            "id=plan,file={},format=raw,if=none,readonly=on",
            plan.display()
        ));
        a.extend(["-device", "virtio-blk-device,drive=plan"].map(String::from));
        Ok(a)
    }

    /// A writable copy of the root disk for one run, made before QEMU's clock starts (VM mode
    /// makes its own inside its launch: `phase_disks_ready`).
    fn root_copy(&mut self) -> Result<sandbox_disk::VmDisk, BenchError> {
        self.counter += 1;
        let p = self.prepared()?;
        let dest = p.work.path().join(format!("root-{}.ext4", self.counter));
        Ok(sandbox_disk::VmDisk::create(&p.base_disk, &dest)?)
    }

    fn spawn(
        &mut self,
        peer: Peer,
        format: KernelFormat,
        work: Work,
    ) -> Result<(Held, sandbox_disk::VmDisk), BenchError> {
        let root = self.root_copy()?;
        let argv = self.argv(peer, format, root.path(), work)?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let held = Held::spawn(&mut cmd, &format!("{peer} {} boot", work.name()), None)?;
        Ok((held, root))
    }

    /// One boot of `peer` to the ready line, then to QEMU's exit: (ready, exit) from spawn.
    pub fn boot_ready(&mut self, peer: Peer) -> Result<(Duration, Duration), BenchError> {
        let format = self.format(peer);
        self.boot_ready_with(peer, format)
    }

    fn boot_ready_with(
        &mut self,
        peer: Peer,
        format: KernelFormat,
    ) -> Result<(Duration, Duration), BenchError> {
        let (mut held, _root) = self.spawn(peer, format, Work::Ready)?;
        let ready = held.wait_ready(is_ready_result, READY_TIMEOUT)?;
        let f = held.finish_within(READY_TIMEOUT + READY_TIMEOUT)?;
        check_console(peer, &f.stdout, &f.stderr, f.status)?;
        Ok((ready, f.wall))
    }

    /// One boot of `peer` running `true`: spawn to QEMU's exit.
    pub fn boot_true(&mut self, peer: Peer) -> Result<Duration, BenchError> {
        let root = self.root_copy()?;
        let argv = self.argv(peer, self.format(peer), root.path(), Work::True)?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let f = run_to_end(&mut cmd, &format!("{peer} true boot"))?;
        check_console(peer, &f.stdout, &f.stderr, f.status)?;
        Ok(f.wall)
    }

    /// The disk scenario on `peer`: `command` from a plan disk of its own, and with `volume` (an
    /// ext4 image file) a third virtio-blk device mounted at `/vol`, configured for speed as
    /// the issue asks: `cache=none,aio=native` (O_DIRECT, no host page cache) where the file's
    /// file system takes O_DIRECT, else QEMU's default (`aio=threads` through the page cache,
    /// as VM mode's block device does). Returns the run and the drive options used.
    pub fn run_disk(
        &mut self,
        peer: Peer,
        command: Vec<String>,
        volume: Option<&Path>,
    ) -> Result<(Finished, String), BenchError> {
        let mut plan = self.prepared()?.ready_plan.clone();
        plan.command = command;
        if volume.is_some() {
            plan.volumes = vec![sandbox_protocol::VolumePlan {
                source: "/dev/vdc".into(),
                target: "/vol".into(),
                read_only: false,
            }];
        }
        self.counter += 1;
        let plan_path = self
            .prepared()?
            .work
            .path()
            .join(format!("plan-disk-{}.img", self.counter));
        std::fs::write(&plan_path, encode_plan_block(&plan))
            .map_err(|e| BenchError::io("cannot write", &plan_path, e))?;
        let root = self.root_copy()?;
        let mut argv = self.argv_with_plan(peer, self.format(peer), root.path(), &plan_path)?;
        let mut options = String::new();
        if let Some(vol) = volume {
            options = if takes_o_direct(vol) {
                "cache=none,aio=native".into()
            } else {
                "cache=writeback,aio=threads".into()
            };
            argv.push("-drive".into());
            argv.push(format!(
                "id=vol,file={},format=raw,if=none,{options}",
                vol.display()
            ));
            argv.extend(["-device", "virtio-blk-device,drive=vol"].map(String::from));
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let f = run_to_end(&mut cmd, &format!("{peer} disk"))?;
        let _ = std::fs::remove_file(&plan_path);
        check_console(peer, &f.stdout, &f.stderr, f.status)?;
        Ok((f, options))
    }

    /// Boots `peer` to ready with a workload that stays, and reads QEMU's memory.
    pub fn memory(&mut self, peer: Peer) -> Result<Memory, BenchError> {
        let format = self.format(peer);
        let (mut held, _root) = self.spawn(peer, format, Work::Hold)?;
        held.wait_ready(is_ready_result, READY_TIMEOUT)?;
        let m = Memory::of(held.pid(), Some(MEMORY_MIB << 20));
        let _ = held.terminate(Duration::from_secs(5));
        m
    }

    /// Decides the tuned configuration's kernel: one discarded boot, then `n` boots of each
    /// format alternately; the lower median `ready_wall_ms` wins. Noted in the report with both
    /// medians. A format that cannot boot loses (with its error noted).
    pub fn choose_kernel(&mut self, bench: &mut Bench) -> Result<KernelFormat, BenchError> {
        if let Some(f) = self.tuned_kernel {
            return Ok(f);
        }
        let peer = Peer::QemuMicrovm;
        let n = if bench.config.quick {
            KERNEL_PROBE_BOOTS_QUICK
        } else {
            KERNEL_PROBE_BOOTS
        };
        bench.say(&format!(
            "{peer}: timing {n} boots each of the bzImage and the PVH vmlinux to pick the faster"
        ));
        let formats = [KernelFormat::Pvh, KernelFormat::BzImage];
        let _ = self.boot_ready_with(peer, KernelFormat::Pvh);
        let mut times: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
        let mut errors: Vec<Option<String>> = vec![None, None];
        for _ in 0..n {
            for (i, f) in formats.iter().enumerate() {
                if errors[i].is_some() {
                    continue;
                }
                match self.boot_ready_with(peer, *f) {
                    Ok((ready, _)) => times[i].push(ms(ready)),
                    Err(e) => errors[i] = Some(e.to_string()),
                }
            }
        }
        let medians: Vec<Option<f64>> = times
            .iter()
            .map(|t| crate::stats::Stats::of(t).map(|s| s.median))
            .collect();
        let chosen = match (medians[0], medians[1]) {
            (Some(pvh), Some(bz)) => {
                if pvh <= bz {
                    KernelFormat::Pvh
                } else {
                    KernelFormat::BzImage
                }
            }
            (Some(_), None) => KernelFormat::Pvh,
            (None, Some(_)) => KernelFormat::BzImage,
            (None, None) => {
                return Err(BenchError::run(
                    peer.name(),
                    format!(
                        "neither kernel format boots: PVH vmlinux: {}; bzImage: {}",
                        errors[0].as_deref().unwrap_or("?"),
                        errors[1].as_deref().unwrap_or("?")
                    ),
                ))
            }
        };
        let show = |i: usize| match (medians[i], &errors[i]) {
            (Some(m), _) => format!("median ready_wall_ms {m:.0} over {} boots", times[i].len()),
            (None, Some(e)) => format!("did not boot ({e})"),
            (None, None) => "not measured".to_string(),
        };
        let verdict = format!(
            "{} — measured in this run: PVH vmlinux {}; bzImage {}",
            chosen.describe(),
            show(0),
            show(1)
        );
        bench.note_once(format!("{peer} boots the {verdict}"));
        bench
            .subject(peer.name(), &description(peer))
            .set("kernel format (the faster, measured)", verdict);
        self.tuned_kernel = Some(chosen);
        Ok(chosen)
    }

    /// Records `peer`'s configuration and the command line of `work` in the report.
    pub fn describe(&self, bench: &mut Bench, peer: Peer, scenario: crate::config::Scenario, work: Work) {
        let Ok(p) = self.prepared() else { return };
        let format = self.format(peer);
        let root = p.work.path().join("root-N.ext4");
        let argv = self.argv(peer, format, &root, work).unwrap_or_default();
        let ready_plan = serde_json::to_value(&p.ready_plan).unwrap_or_default();
        let base = p.base_disk.display().to_string();
        let s: &mut SubjectSetup = bench.subject(peer.name(), &description(peer));
        s.set("machine", machine_args(peer).join(" "));
        s.set("kernel", format.describe());
        s.set(
            "kernel command line",
            format!(
                "{} (QEMU appends virtio_mmio.device=512@0xfeb0...:IRQ for each device)",
                kernel_cmdline(peer)
            ),
        );
        s.set(
            "root disk",
            format!(
                "a writable copy of {base} (VM mode's cached root disk) per run, made before QEMU's \
                 clock starts (root-N.ext4 below)"
            ),
        );
        s.set(
            "ready signal",
            "sandbox-guest ready: a write to port 0x4f0 (unassigned in QEMU), then its JSON line on \
             ttyS0; timed from spawn to that line on QEMU's stdout",
        );
        s.command(scenario, work.name(), argv);
        s.config("plan (the ready run's; plan disk /dev/vdb)", ready_plan);
    }
}

fn description(peer: Peer) -> String {
    match peer {
        Peer::QemuMicrovm => "QEMU microvm as a speed-minded user runs it: QEMU's documented fast \
                              microvm options, VM mode's kernel parameters, the faster kernel format; \
                              the same kernel, root disk, plan and sandbox-guest init as VM mode"
            .into(),
        _ => "QEMU microvm with the machine's defaults and a minimal kernel command line; the same \
              kernel, root disk, plan and sandbox-guest init as VM mode"
            .into(),
    }
}

/// Fails when QEMU did not end cleanly or the console shows the guest failing (a panic, or init
/// reporting an error) — QEMU itself exits 0 on the guest's reboot either way.
fn check_console(peer: Peer, stdout: &str, stderr: &str, status: i32) -> Result<(), BenchError> {
    let bad = stdout
        .lines()
        .find(|l| l.contains("Kernel panic") || l.contains("sandbox-guest init:"));
    if status != 0 || bad.is_some() {
        return Err(BenchError::run(
            format!("{peer} boot"),
            format!(
                "QEMU exit status {status}{}: console: {} stderr: {}",
                bad.map(|l| format!(", console says {:?}", l.trim()))
                    .unwrap_or_default(),
                tail(stdout),
                tail(stderr)
            ),
        ));
    }
    Ok(())
}

/// Whether `path`'s file system takes O_DIRECT (tmpfs, the lab's, does not).
fn takes_o_direct(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuned_command_line_is_vm_modes_flags_with_a_triple_fault_reboot() {
        let line = kernel_cmdline(Peer::QemuMicrovm);
        for flag in FAST_BOOT_FLAGS.iter().filter(|f| !f.starts_with("reboot=")) {
            assert!(line.split(' ').any(|w| w == *flag), "{flag} missing from {line}");
        }
        assert!(line.contains("reboot=t") && !line.contains("reboot=k"), "{line}");
        assert!(
            line.contains("sandbox.plan=/dev/vdb") && line.contains("root=/dev/vda rw"),
            "{line}"
        );
        assert!(line.ends_with("init=/usr/bin/sandbox-guest"), "{line}");
        // QEMU appends its devices at the end: a `--` would hand them to init.
        assert!(!line.split(' ').any(|w| w == "--"), "{line}");
        let default = kernel_cmdline(Peer::QemuMicrovmDefault);
        assert!(
            !default.contains("pci=off") && !default.contains("8250.nr_uarts"),
            "{default}"
        );
        assert!(default.contains("sandbox.plan=/dev/vdb"), "{default}");
    }

    #[test]
    fn only_the_tuned_machine_turns_the_legacy_devices_off() {
        let tuned = machine_args(Peer::QemuMicrovm).join(" ");
        for opt in [
            "x-option-roms=off",
            "pit=off",
            "pic=off",
            "rtc=off",
            "virtio-mmio.force-legacy=off",
        ] {
            assert!(tuned.contains(opt), "{tuned}");
        }
        assert_eq!(
            machine_args(Peer::QemuMicrovmDefault).join(" "),
            "-M microvm,acpi=off"
        );
    }

    #[test]
    fn console_failures_are_errors_naming_the_line() {
        assert!(check_console(Peer::QemuMicrovm, "{\"workload\":\"ready\"}\r\n", "", 0).is_ok());
        let e = check_console(
            Peer::QemuMicrovm,
            "sandbox-guest init: plan device /dev/vdb (from sandbox.plan=): cannot open\r\n",
            "",
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("plan device /dev/vdb"), "{e}");
        assert!(check_console(Peer::QemuMicrovmDefault, "", "qemu: could not open", 1).is_err());
    }
}
