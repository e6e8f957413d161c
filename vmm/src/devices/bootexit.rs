//! The boot/exit device at I/O port `exit_device::PORT`, like Firecracker's boot timer but also
//! carrying the workload's exit status: the guest writes 32-bit values (init started, workload
//! ready, exit status) and the VMM timestamps each relative to its own start.

use std::sync::{Arc, Mutex};

use sandbox_protocol::exit_device::Event;

use crate::bus::BusDevice;
use crate::state::{Clock, GuestReports};

/// Length of the port range (one 32-bit register).
pub const LEN: u64 = 4;

pub struct BootExit {
    clock: Clock,
    reports: Arc<Mutex<GuestReports>>,
}

impl BootExit {
    pub fn new(clock: Clock, reports: Arc<Mutex<GuestReports>>) -> BootExit {
        BootExit { clock, reports }
    }
}

impl BusDevice for BootExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only whole 32-bit writes at the register count; anything else is noise.
        let (0, Ok(bytes)) = (offset, <[u8; 4]>::try_from(data)) else {
            return;
        };
        let now = self.clock.now_us();
        let mut r = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let event = Event::decode(u32::from_le_bytes(bytes));
        sandbox_protocol::trace::note("guest.event", || match event {
            Some(Event::InitStarted) => "init started (the kernel handed over to user space)".into(),
            Some(Event::Ready) => "workload ready".into(),
            Some(Event::Exit(status)) => format!("exit status {status}"),
            None => format!("unknown value {:#x}", u32::from_le_bytes(bytes)),
        });
        match event {
            Some(Event::InitStarted) => {
                r.init_started_us.get_or_insert(now);
            }
            Some(Event::Ready) => {
                r.ready_us.get_or_insert(now);
            }
            Some(Event::Exit(status)) => {
                r.exit_status = Some(status);
                r.exit_us = Some(now);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn records_each_event_once_with_a_time_and_the_exit_status() {
        let reports = Arc::new(Mutex::new(GuestReports::default()));
        let mut dev = BootExit::new(Clock::new(Instant::now()), reports.clone());
        dev.write(0, &Event::InitStarted.encode().to_le_bytes());
        let first = reports.lock().unwrap().init_started_us.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        dev.write(0, &Event::InitStarted.encode().to_le_bytes());
        assert_eq!(reports.lock().unwrap().init_started_us, Some(first));
        dev.write(0, &Event::Ready.encode().to_le_bytes());
        dev.write(0, &Event::Exit(42).encode().to_le_bytes());
        let r = *reports.lock().unwrap();
        assert!(r.ready_us.unwrap() >= first);
        assert_eq!(r.exit_status, Some(42));
    }

    #[test]
    fn ignores_unknown_values_and_partial_writes() {
        let reports = Arc::new(Mutex::new(GuestReports::default()));
        let mut dev = BootExit::new(Clock::new(Instant::now()), reports.clone());
        dev.write(0, &0x1234u32.to_le_bytes());
        dev.write(0, &[0x01, 0x00]);
        dev.write(1, &Event::Exit(3).encode().to_le_bytes());
        assert_eq!(*reports.lock().unwrap(), GuestReports::default());
    }
}
