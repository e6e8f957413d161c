//! What the VMM reads into the guest console's text, and when it believes it.
//!
//! The console carries the kernel's messages and, once init has started, whatever the workload
//! prints: from then on any line can be forged. So a console line may only end the VM while
//! the kernel alone writes there, before the guest program reports "init started" through the
//! boot/exit device. After that the VM ends through the boot/exit device's exit status and a real
//! reset (init reboots with `reboot=k`), a triple fault, a real halt (KVM's own exit, or every
//! vCPU found halted for good by the [`HaltCheck`]), or a signal.
//!
//! - The power-down lines ([`POWER_DOWN_LINES`]) end the VM as a power-off before init; after
//!   it they only start the halt check, which ends the VM if the kernel really did halt (a
//!   workload's `poweroff -f`) and does nothing if the line was just printed.
//! - "Kernel panic" in the console's last lines ([`crate::devices::serial::Tail::has_panic`])
//!   never ends the VM: it only names an ending that already happened without an exit status
//!   (the kernel's `panic=1` reset). It stays honoured after init started, since the kernel's
//!   own panic when init dies comes after it; a workload that forges it changes the message of
//!   a crash ending, not its status.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::halt_check::HaltCheck;
use crate::state::{GuestReports, Stop, StopReason};

/// What the kernel prints as it powers off or halts (`pr_emerg`, so shown even with `quiet`;
/// without ACPI a power-off request becomes a halt). Either only halts the vCPUs, which KVM's
/// in-kernel LAPIC keeps from the VMM: these lines are the only sign of it.
pub const POWER_DOWN_LINES: &[&str] = &["reboot: Power down", "reboot: System halted"];

/// Whether a complete console line is the kernel's power-down line (after an optional printk
/// timestamp or other prefix).
pub fn is_power_down_line(line: &str) -> bool {
    POWER_DOWN_LINES.iter().any(|p| line.ends_with(p))
}

/// What a console line made the VMM do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEffect {
    /// Nothing: not a power-down line.
    None,
    /// The VM is stopping as a power-off (the line came before init started).
    Stopped,
    /// The halt check runs: the line came after init started, so only KVM's view counts.
    HaltCheck,
}

/// Decides what a console line does: a power-down line ends the VM until the guest reports that
/// init started, and only starts the halt check after.
pub struct PowerDownWatch {
    stop: Arc<Stop>,
    reports: Arc<Mutex<GuestReports>>,
    halt_check: Option<Arc<HaltCheck>>,
}

impl PowerDownWatch {
    /// Watches for `stop`'s sake; `reports` is what the boot/exit device records.
    pub fn new(stop: Arc<Stop>, reports: Arc<Mutex<GuestReports>>) -> PowerDownWatch {
        PowerDownWatch {
            stop,
            reports,
            halt_check: None,
        }
    }

    /// After init started, a power-down line requests `check`.
    pub fn with_halt_check(mut self, check: Arc<HaltCheck>) -> PowerDownWatch {
        self.halt_check = Some(check);
        self
    }

    /// Whether only the kernel can be writing to the console yet.
    fn before_init(&self) -> bool {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.init_started_us.is_none()
    }

    /// Looks at one complete console line.
    pub fn on_line(&self, line: &str) -> LineEffect {
        if !is_power_down_line(line) {
            return LineEffect::None;
        }
        if self.before_init() {
            self.stop.request(StopReason::PowerOff);
            return LineEffect::Stopped;
        }
        match &self.halt_check {
            Some(check) => {
                check.request(Instant::now());
                LineEffect::HaltCheck
            }
            None => LineEffect::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use crate::devices::bootexit::BootExit;
    use crate::state::Clock;
    use sandbox_protocol::exit_device::Event;
    use std::time::Instant;

    fn watch() -> (PowerDownWatch, Arc<Stop>, BootExit, Arc<HaltCheck>) {
        let stop = Arc::new(Stop::new().unwrap());
        let reports = Arc::new(Mutex::new(GuestReports::default()));
        let exit = BootExit::new(Clock::new(Instant::now()), reports.clone());
        let check = Arc::new(HaltCheck::new(1).unwrap());
        let watch = PowerDownWatch::new(stop.clone(), reports).with_halt_check(check.clone());
        (watch, stop, exit, check)
    }

    fn report(exit: &mut BootExit, event: Event) {
        exit.write(0, &event.encode().to_le_bytes());
    }

    #[test]
    fn the_kernel_power_down_line_ends_the_vm_before_init() {
        let (w, stop, _, _) = watch();
        assert_eq!(w.on_line("echo reboot: Power downstairs"), LineEffect::None);
        assert!(!stop.is_requested());
        assert_eq!(w.on_line("[    1.234] reboot: Power down"), LineEffect::Stopped);
        assert_eq!(stop.reason(), Some(StopReason::PowerOff));
        let (w, stop, _, _) = watch();
        assert_eq!(w.on_line("reboot: System halted"), LineEffect::Stopped);
        assert_eq!(stop.reason(), Some(StopReason::PowerOff));
    }

    #[test]
    fn after_init_started_no_console_line_ends_the_vm() {
        let (w, stop, mut exit, check) = watch();
        report(&mut exit, Event::InitStarted);
        assert!(!check.running(Instant::now()));
        for line in POWER_DOWN_LINES {
            assert_eq!(w.on_line(line), LineEffect::HaltCheck);
            assert_eq!(
                w.on_line(&format!("[    9.000000] {line}")),
                LineEffect::HaltCheck
            );
        }
        report(&mut exit, Event::Ready);
        report(&mut exit, Event::Exit(0));
        assert_eq!(w.on_line("reboot: Power down"), LineEffect::HaltCheck);
        assert!(!stop.is_requested());
        // The lines only asked KVM's view: the halt check runs, and the vCPUs answer it.
        assert!(check.running(Instant::now()));
        let (w, stop, mut exit, _) = watch();
        let w = PowerDownWatch {
            halt_check: None,
            ..w
        };
        report(&mut exit, Event::InitStarted);
        assert_eq!(w.on_line("reboot: Power down"), LineEffect::None);
        assert!(!stop.is_requested());
    }
}
