//! One VM from build to end: KVM VM and memory, devices on their buses, kernel and boot data in
//! memory, vCPUs configured; then the run — device thread, one thread per vCPU, waiting for the
//! stop reason or a signal — and the teardown that turns what happened into a [`VmOutcome`].

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use sandbox_protocol::{encode_plan_block, exit_device, Mode, Plan, ReadyChannel};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::boot::cmdline::{self, CmdlineSpec};
use crate::boot::loader::{self, BootEntry, KernelFormat, KernelInfo};
use crate::boot::{cpuid, mptable, regs};
use crate::bus::Bus;
use crate::console_input::ConsoleInput;
use crate::console_signals::PowerDownWatch;
use crate::console_writer::{ConsoleEnd, ConsoleWriter};
use crate::devices::bootexit::{self, BootExit};
use crate::devices::i8042::I8042;
use crate::devices::serial::{SerialDevice, SerialOut, Tail};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::vsock::{UdsCleanup, Vsock};
use crate::devices::virtio::VirtioDevice;
use crate::error::VmmError;
use crate::event_loop::{DeviceThread, Subscriber, VirtioSubscriber};
use crate::halt_check::{HaltCheck, ROUND_INTERVAL};
use crate::layout;
use crate::state::{Clock, GuestReports, Stop, StopReason};
use crate::tap::Tap;
use crate::vcpu::{self, VcpuRunner};
use crate::vm;
use crate::{Ending, SerialSink, Timings, VmConfig, VmOutcome};
use sandbox_protocol::trace;
use std::os::fd::AsRawFd;

/// How long teardown keeps kicking a vCPU thread out of KVM_RUN before leaving it behind.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long teardown waits for a console writer that makes no progress before leaving it behind.
const CONSOLE_STALL_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Machine {
    // Field order is drop order: vCPU fds before the VM fd before guest memory.
    vcpus: Vec<VcpuFd>,
    _vm: VmFd,
    _kvm: Kvm,
    mem: GuestMemoryMmap,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    subscribers: Vec<Subscriber>,
    serial: Arc<Mutex<SerialDevice>>,
    serial_input: bool,
    stop: Arc<Stop>,
    halt_check: Arc<HaltCheck>,
    reports: Arc<Mutex<GuestReports>>,
    tail: Arc<Mutex<Tail>>,
    clock: Clock,
    kernel_entry_us: Arc<Mutex<Option<u64>>>,
    vm_built_us: u64,
    boot_protocol: &'static str,
    /// Removes the vsock unix socket when the VM ends (dropped at the end of `run`, or with the
    /// machine when it never runs), even if a vCPU thread left behind keeps the device alive.
    vsock_uds: Option<UdsCleanup>,
}

/// Devices being put together, before the buses are frozen.
struct Builder<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    mmio: Bus,
    subscribers: Vec<Subscriber>,
    slots: Vec<(u64, u32)>,
}

impl Builder<'_> {
    fn add_virtio<D: VirtioDevice + 'static>(&mut self, device: D) -> Result<(), VmmError> {
        let began = trace::start();
        let kind = match device.device_type() {
            1 => "virtio-net",
            2 => "virtio-blk",
            19 => "virtio-vsock",
            _ => "virtio",
        };
        let index = self.slots.len();
        if index >= layout::MAX_VIRTIO_DEVICES {
            return Err(VmmError::TooManyDevices {
                max: layout::MAX_VIRTIO_DEVICES,
            });
        }
        let base = layout::virtio_mmio_base(index);
        let irq = layout::virtio_irq(index);
        let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::io("creating an irq eventfd"))?;
        vm::register_irq(self.vm, &irq_evt, irq)?;
        let transport = MmioTransport::new(device, self.mem.clone(), irq_evt)?;
        for (q, evt) in transport.queue_evts().iter().enumerate() {
            vm::register_mmio_notify(self.vm, evt, base + QUEUE_NOTIFY_OFFSET, q as u32)?;
        }
        let transport = Arc::new(Mutex::new(transport));
        self.mmio
            .insert(base, layout::VIRTIO_MMIO_SLOT, transport.clone())?;
        self.subscribers
            .push(Arc::new(Mutex::new(VirtioSubscriber::new(transport))));
        self.slots.push((base, irq));
        trace::step("device", began, || {
            format!(
                "{kind} slot {index} mmio {base:#x}+{:#x} irq {irq}",
                layout::VIRTIO_MMIO_SLOT
            )
        });
        Ok(())
    }
}

/// The plan as the guest must see it: VM mode, ready through the boot/exit port.
pub fn vm_plan(plan: &Plan) -> Plan {
    let mut plan = plan.clone();
    plan.mode = Mode::Vm;
    plan.ready = ReadyChannel::Port(exit_device::PORT);
    plan
}

fn plan_disk(plan: &Plan) -> Result<Block, VmmError> {
    let plan = vm_plan(plan);
    let fd = nix::sys::memfd::memfd_create(c"sandbox-plan", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| VmmError::PlanBlock(e.into()))?;
    let mut file = File::from(fd);
    file.write_all(&encode_plan_block(&plan))
        .map_err(VmmError::PlanBlock)?;
    Block::new(file, true, "sandbox-plan").map_err(VmmError::PlanBlock)
}

fn boot_protocol(entry: &BootEntry, format: KernelFormat) -> &'static str {
    match (entry, format) {
        (BootEntry::Pvh { .. }, _) => "pvh",
        (BootEntry::Linux64 { .. }, KernelFormat::BzImage) => "linux-64 (bzImage)",
        (BootEntry::Linux64 { .. }, KernelFormat::Elf) => "linux-64 (vmlinux)",
    }
}

impl Machine {
    /// Builds the whole VM; nothing runs yet. On error everything built so far is dropped (the
    /// tap with it).
    pub fn build(mut config: VmConfig, kernel: KernelInfo) -> Result<Machine, VmmError> {
        let clock = Clock::new(config.started);
        let began = trace::start();
        let kvm = Kvm::new().map_err(VmmError::Kvm)?;
        trace::step("kvm", began, || {
            format!(
                "/dev/kvm fd {}, KVM_GET_API_VERSION {}",
                kvm.as_raw_fd(),
                kvm.get_api_version()
            )
        });
        vm::check_capabilities(&kvm)?;
        let max_vcpus = (kvm.get_max_vcpus() as u32).min(mptable::MAX_SUPPORTED_CPUS);
        if config.vcpus == 0 || config.vcpus > max_vcpus {
            return Err(VmmError::BadVcpuCount {
                requested: config.vcpus,
                max: max_vcpus,
            });
        }
        let began = trace::start();
        let mem = layout::guest_memory(config.memory_mib)?;
        for r in mem.iter() {
            trace::step("memory", began, || {
                format!(
                    "guest {:#x} size {:#x} host {:#x}",
                    r.start_addr().0,
                    r.len(),
                    r.get_host_address(MemoryRegionAddress(0)).map_or(0, |p| p as u64)
                )
            });
        }
        let began = trace::start();
        let vm_fd = vm::create(&kvm, &mem)?;
        trace::step("vm", began, || {
            format!("KVM_CREATE_VM fd {}, memory slots set", vm_fd.as_raw_fd())
        });

        let stop = Arc::new(Stop::new()?);
        let halt_check = Arc::new(HaltCheck::new(config.vcpus as usize)?);
        let reports = Arc::new(Mutex::new(GuestReports::default()));
        let tail = Arc::new(Mutex::new(Tail::default()));

        // Legacy devices on the port bus.
        let mut pio = Bus::new();
        let serial_irq =
            EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::io("creating the serial irq eventfd"))?;
        vm::register_irq(&vm_fd, &serial_irq, layout::SERIAL_IRQ)?;
        let sink: Box<dyn Write + Send> = match std::mem::replace(&mut config.serial, SerialSink::Null) {
            SerialSink::Stdout => Box::new(std::io::stdout()),
            SerialSink::Null => Box::new(std::io::sink()),
            SerialSink::Writer(w) => w,
        };
        let mut console = SerialOut::new(ConsoleWriter::spawn(sink)?, tail.clone()).watch_power_down(
            PowerDownWatch::new(stop.clone(), reports.clone()).with_halt_check(halt_check.clone()),
        );
        if config.console_raw {
            console = console.raw();
        }
        let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, console)));
        pio.insert(
            u64::from(layout::SERIAL_PORT),
            u64::from(layout::SERIAL_PORT_LEN),
            serial.clone(),
        )?;
        pio.insert(
            u64::from(layout::I8042_PORT),
            u64::from(layout::I8042_PORT_LEN),
            Arc::new(Mutex::new(I8042::new(stop.clone()))),
        )?;
        pio.insert(
            u64::from(exit_device::PORT),
            bootexit::LEN,
            Arc::new(Mutex::new(BootExit::new(clock, reports.clone()))),
        )?;
        trace::note("device", || {
            format!(
                "serial 16550 port {:#x}+{} irq {} (the console, ttyS0)",
                layout::SERIAL_PORT,
                layout::SERIAL_PORT_LEN,
                layout::SERIAL_IRQ
            )
        });
        trace::note("device", || {
            format!(
                "i8042 port {:#x}+{} (its reset ends the VM: reboot=k)",
                layout::I8042_PORT,
                layout::I8042_PORT_LEN
            )
        });
        trace::note("device", || {
            format!(
                "boot/exit port {:#x}+{} (init started, ready, exit status)",
                exit_device::PORT,
                bootexit::LEN
            )
        });

        // Virtio devices, in the order the guest names them: root, plan, volumes, net, vsock.
        let mut b = Builder {
            vm: &vm_fd,
            mem: &mem,
            mmio: Bus::new(),
            subscribers: Vec::new(),
            slots: Vec::new(),
        };
        b.add_virtio(Block::open(
            &config.root.path,
            config.root.read_only,
            "sandbox-root",
        )?)?;
        if let Some(plan) = &config.plan {
            b.add_virtio(plan_disk(plan)?)?;
        }
        for (i, disk) in config.disks.iter().enumerate() {
            b.add_virtio(Block::open(
                &disk.path,
                disk.read_only,
                &format!("sandbox-vol{i}"),
            )?)?;
        }
        if let Some(net) = &config.net {
            let tap = match config.tap.take() {
                Some(tap) => tap,
                None => {
                    let tap = Tap::create(&net.tap_name)?;
                    tap.configure_host(net.host_address, net.prefix_len)?;
                    tap
                }
            };
            b.add_virtio(Net::new(tap.into_file(), net.guest_mac))?;
        }
        let mut vsock_uds = None;
        if let Some(v) = &config.vsock {
            let mut vsock = Vsock::new(v.guest_cid, &v.uds_path)?;
            vsock_uds = vsock.take_cleanup();
            b.add_virtio(vsock)?;
            trace::note("device", || {
                format!(
                    "vsock guest cid {}, host socket {} (guest connections to port P: {}_P)",
                    v.guest_cid,
                    v.uds_path.display(),
                    v.uds_path.display()
                )
            });
        }
        let Builder {
            mmio,
            subscribers,
            slots,
            ..
        } = b;

        // Kernel, command line and boot data.
        let cmdline = cmdline::build(&CmdlineSpec {
            root_read_only: config.root.read_only,
            virtio_devices: slots,
            plan_device: config.plan_device(),
            verbose: config.verbose_kernel,
            extra: config.cmdline_extra.clone(),
        })?;
        trace::note("cmdline", || {
            cmdline
                .as_cstring()
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let began = trace::start();
        let entry = loader::load(&mem, &config.kernel, kernel.format)?;
        trace::step("kernel", began, || {
            format!(
                "{} {:?} loaded, entry {:#x} ({})",
                config.kernel.display(),
                kernel.format,
                entry.address().0,
                boot_protocol(&entry, kernel.format)
            )
        });
        loader::write_boot_info(
            &mem,
            &entry,
            &cmdline,
            &layout::memory_map(config.memory_mib << 20),
        )?;
        regs::write_boot_tables(&mem, &entry)?;
        mptable::write(&mem, config.vcpus)?;

        // vCPUs.
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmmError::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        let extras = cpuid::KvmExtras {
            tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer),
        };
        trace::note("cpuid", || {
            format!(
                "KVM's supported set, per-vCPU APIC IDs and topology, TSC-deadline timer {}",
                if extras.tsc_deadline {
                    "on (no LAPIC timer calibration in the guest)"
                } else {
                    "off (KVM lacks it)"
                }
            )
        });
        let mut vcpus = Vec::new();
        for i in 0..config.vcpus {
            let fd = vm_fd
                .create_vcpu(u64::from(i))
                .map_err(VmmError::kvm("KVM_CREATE_VCPU"))?;
            let began = trace::start();
            vcpu::configure(&fd, &supported, i, config.vcpus, extras, &entry)?;
            trace::step("vcpu", began, || match (fd.get_regs(), fd.get_sregs()) {
                (Ok(r), Ok(s)) => format!(
                    "{i}: rip {:#x} rsp {:#x} rflags {:#x} rsi {:#x} rbx {:#x} cr0 {:#x} cr3 {:#x} \
                     cr4 {:#x} efer {:#x} cs {:#x} (l={} db={})",
                    r.rip,
                    r.rsp,
                    r.rflags,
                    r.rsi,
                    r.rbx,
                    s.cr0,
                    s.cr3,
                    s.cr4,
                    s.efer,
                    s.cs.selector,
                    s.cs.l,
                    s.cs.db
                ),
                (Err(e), _) | (_, Err(e)) => format!("{i}: registers unreadable: {e}"),
            });
            vcpus.push(fd);
        }

        Ok(Machine {
            vcpus,
            _vm: vm_fd,
            _kvm: kvm,
            mem,
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            subscribers,
            serial,
            serial_input: config.serial_input,
            stop,
            halt_check,
            reports,
            tail,
            clock,
            kernel_entry_us: Arc::new(Mutex::new(None)),
            vm_built_us: clock.now_us(),
            boot_protocol: boot_protocol(&entry, kernel.format),
            vsock_uds,
        })
    }

    /// Runs the VM to its end. SIGINT, SIGTERM, SIGHUP and SIGQUIT are held for the duration and
    /// end the VM instead of the process.
    pub fn run(self) -> Result<VmOutcome, VmmError> {
        let mut mask = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
            mask.add(s);
        }
        let old = mask
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(|e| VmmError::io("blocking signals")(e.into()))?;
        let result = self.run_with_signals_blocked(&mask);
        // Restoring the caller's mask cannot fail with a valid set.
        let _ = old.thread_set_mask();
        result
    }

    fn run_with_signals_blocked(mut self, mask: &SigSet) -> Result<VmOutcome, VmmError> {
        let sigfd = SignalFd::with_flags(mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| VmmError::io("creating a signalfd")(e.into()))?;
        vcpu::install_kick_handler()?;
        let mut subscribers = std::mem::take(&mut self.subscribers);
        if self.serial_input {
            subscribers.push(Arc::new(Mutex::new(ConsoleInput::stdin(self.serial.clone())?)));
        }
        let stop = self.stop.clone();
        let devices = DeviceThread::spawn(subscribers, move |reason| {
            stop.request(StopReason::VcpuFailure(reason))
        })?;

        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for (i, fd) in std::mem::take(&mut self.vcpus).into_iter().enumerate() {
            let runner = VcpuRunner {
                vcpu: fd,
                index: i as u32,
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                stop: self.stop.clone(),
                clock: self.clock,
                kernel_entry_us: self.kernel_entry_us.clone(),
                halt_check: self.halt_check.clone(),
            };
            match std::thread::Builder::new()
                .name(format!("sandbox-vcpu{i}"))
                .spawn({
                    let stop = self.stop.clone();
                    move || {
                        // A panicking vCPU thread must still stop the VM, or `wait` never returns.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run())).is_err() {
                            stop.request(StopReason::VcpuFailure(format!("the vCPU {i} thread panicked")));
                        }
                    }
                }) {
                Ok(h) => threads.push(h),
                Err(e) => {
                    self.stop
                        .request(StopReason::VcpuFailure(format!("starting vCPU thread {i}: {e}")));
                    break;
                }
            }
        }

        self.wait(&sigfd, &threads);
        Self::stop_vcpus(threads);
        let device_result = devices.stop();
        // No host program can reach the guest any more.
        drop(self.vsock_uds.take());
        let ended_us = self.clock.now_us();
        let console = self.finish_console();
        // A device-thread failure during the run already stopped the VM as a VcpuFailure (its
        // on_failure hook); one at teardown does not change how the guest ended.
        drop(device_result);
        Ok(self.outcome(ended_us, console))
    }

    /// Passes the console's last partial line on and waits (bounded) for the writer; a sink that
    /// failed or stalled is not the VM's failure, only lost output.
    fn finish_console(&self) -> ConsoleEnd {
        // vCPU threads never wait on the sink, so this lock is only ever held briefly.
        let end = self
            .serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finish_output(CONSOLE_STALL_TIMEOUT);
        if end.lost() > 0 || !end.complete {
            trace::note("console", || {
                format!(
                    "{} bytes of guest output dropped (the output did not keep up or failed){}",
                    end.lost(),
                    if end.complete {
                        ""
                    } else {
                        "; its writer was left behind, stalled"
                    }
                )
            });
        }
        end
    }

    /// Blocks until a stop reason is recorded or a signal arrives, running the halt check's
    /// rounds over `vcpus` while one is requested.
    fn wait(&self, sigfd: &SignalFd, vcpus: &[JoinHandle<()>]) {
        use std::os::fd::AsRawFd;
        const STOP: u64 = 0;
        const SIGNAL: u64 = 1;
        const HALT_CHECK: u64 = 2;
        let epoll = match Epoll::new() {
            Ok(e) => e,
            Err(e) => {
                self.stop
                    .request(StopReason::VcpuFailure(format!("creating an epoll: {e}")));
                return;
            }
        };
        let add = |fd, data| epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, data));
        if let Err(e) = add(self.stop.eventfd().as_raw_fd(), STOP)
            .and(add(sigfd.as_raw_fd(), SIGNAL))
            .and(add(self.halt_check.eventfd().as_raw_fd(), HALT_CHECK))
        {
            self.stop
                .request(StopReason::VcpuFailure(format!("watching the stop events: {e}")));
            return;
        }
        let mut events = [EpollEvent::default(); 3];
        let mut last_round = None;
        while !self.stop.is_requested() {
            let timeout_ms = self.halt_check_round(vcpus, &mut last_round);
            let n = match epoll.wait(timeout_ms, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.stop
                        .request(StopReason::VcpuFailure(format!("waiting for the VM: {e}")));
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    SIGNAL => {
                        if let Ok(Some(info)) = sigfd.read_signal() {
                            self.stop.request(StopReason::Signal(info.ssi_signo as i32));
                        }
                    }
                    HALT_CHECK => {
                        let _ = self.halt_check.eventfd().read();
                    }
                    _ => {
                        let _ = self.stop.eventfd().read();
                    }
                }
            }
        }
    }

    /// Runs a halt-check round when one is due, at most one per [`ROUND_INTERVAL`] however often
    /// the guest asks: kicks every vCPU thread out of KVM_RUN to answer it. Returns how long to
    /// wait for events before the next one (-1: no check is running).
    fn halt_check_round(&self, vcpus: &[JoinHandle<()>], last_round: &mut Option<Instant>) -> i32 {
        let now = Instant::now();
        let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
        if let Some(due) = last_round.map(|t| t + ROUND_INTERVAL).filter(|due| now < *due) {
            return millis(due - now);
        }
        if !self.halt_check.start_round(now) {
            *last_round = None;
            return -1;
        }
        *last_round = Some(now);
        for handle in vcpus {
            // A thread that already ended needs no kick; a kick it misses only delays its answer.
            let _ = handle.kill(vcpu::kick_signal());
        }
        millis(ROUND_INTERVAL)
    }

    /// Knocks every vCPU thread out of KVM_RUN and joins it (a thread stuck past the timeout is
    /// left behind rather than hanging the VMM).
    fn stop_vcpus(threads: Vec<JoinHandle<()>>) {
        let deadline = Instant::now() + VCPU_STOP_TIMEOUT;
        for handle in threads {
            while !handle.is_finished() && Instant::now() < deadline {
                // A kick between the thread's stop check and KVM_RUN is lost, hence the repeats.
                let _ = handle.kill(vcpu::kick_signal());
                std::thread::sleep(Duration::from_millis(1));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }

    fn guest_ranges(&self) -> Vec<(u64, u64)> {
        self.mem
            .iter()
            .filter_map(|r| {
                let start = r.get_host_address(MemoryRegionAddress(0)).ok()? as u64;
                Some((start, start + r.len()))
            })
            .collect()
    }

    fn outcome(&self, ended_us: u64, console: ConsoleEnd) -> VmOutcome {
        let reports = *self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let (lines, panicked) = {
            let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            (tail.lines(), tail.has_panic())
        };
        let ending = match (self.stop.reason(), reports.exit_status) {
            (Some(StopReason::VcpuFailure(reason)), _) => Ending::VcpuFailure {
                reason,
                last_lines: lines,
            },
            (Some(StopReason::Signal(n)), None) => Ending::Signal(n),
            (_, Some(status)) => Ending::GuestExit(status),
            _ if panicked => Ending::Panic { last_lines: lines },
            (Some(StopReason::TripleFault), None) => Ending::TripleFault { last_lines: lines },
            (Some(StopReason::PowerOff), None) => Ending::PowerOff,
            _ => Ending::Reboot,
        };
        VmOutcome {
            ending,
            timings: Timings {
                vm_built_us: self.vm_built_us,
                kernel_entry_us: *self.kernel_entry_us.lock().unwrap_or_else(|p| p.into_inner()),
                init_started_us: reports.init_started_us,
                ready_us: reports.ready_us,
                exit_reported_us: reports.exit_us,
                ended_us,
            },
            vmm_rss_bytes_excluding_guest: crate::rss::current(&self.guest_ranges()),
            boot_protocol: self.boot_protocol,
            console_bytes_dropped: console.lost(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_protocol::{decode_plan_block, Mode};
    use std::io::Read;

    #[test]
    fn the_plan_disk_holds_the_plan_in_vm_mode_with_the_port_as_ready_channel() {
        let plan = Plan::new(
            Mode::Container,
            vec!["sh".into(), "-c".into(), "echo 'a  b'".into()],
        );
        let block = plan_disk(&plan).unwrap();
        assert_eq!(block.capacity_sectors(), 8);
        let mut bytes = Vec::new();
        let mut file = block.into_file();
        std::io::Seek::rewind(&mut file).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        let seen = decode_plan_block(&bytes).unwrap();
        assert_eq!(seen.command, plan.command);
        assert_eq!(seen.mode, Mode::Vm);
        assert_eq!(seen.ready, ReadyChannel::Port(exit_device::PORT));
    }
}
