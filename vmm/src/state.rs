//! State shared by the vCPU threads, the device thread and the thread that called `run`: the VMM
//! clock, the boot/exit events the guest reported, and the one reason the VM stopped.

use std::sync::Mutex;
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

use crate::error::VmmError;

/// Microseconds since the VMM started (the caller's start instant).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new(start: Instant) -> Clock {
        Clock { start }
    }

    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// What the guest reported through the boot/exit device, with times (µs since VMM start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestReports {
    pub init_started_us: Option<u64>,
    pub ready_us: Option<u64>,
    pub exit_status: Option<u8>,
    pub exit_us: Option<u64>,
}

/// Why the vCPUs stopped (the first reason wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest reset the machine through the i8042 (`reboot=k`).
    Reset,
    /// A vCPU hit a triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// The kernel powered off or halted: its power-down line before init started, or, after,
    /// every vCPU found halted for good (see [`crate::console_signals`]).
    PowerOff,
    /// A vCPU halted with interrupts off (only reaches the VMM without an in-kernel LAPIC).
    Halted,
    /// KVM could not run a vCPU (entry failure, internal error, unexpected exit).
    VcpuFailure(String),
    /// The VMM received this signal.
    Signal(i32),
}

/// The stop reason plus an eventfd that wakes the thread waiting for it.
pub struct Stop {
    reason: Mutex<Option<StopReason>>,
    evt: EventFd,
}

impl Stop {
    pub fn new() -> Result<Stop, VmmError> {
        Ok(Stop {
            reason: Mutex::new(None),
            evt: EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::io("creating the stop eventfd"))?,
        })
    }

    /// Records `reason` unless one is already recorded, and wakes the waiter.
    pub fn request(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        // A full eventfd counter still wakes the waiter, so an error here loses nothing.
        let _ = self.evt.write(1);
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_requested(&self) -> bool {
        self.reason().is_some()
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_reason_wins_and_wakes_the_waiter() {
        let stop = Stop::new().unwrap();
        assert!(!stop.is_requested());
        stop.request(StopReason::Reset);
        stop.request(StopReason::TripleFault);
        assert_eq!(stop.reason(), Some(StopReason::Reset));
        assert!(stop.eventfd().read().unwrap() >= 1);
    }
}
