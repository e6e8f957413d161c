//! The guest console's way in: the VMM's stdin (`sandbox run -i`) fed to the serial port, at the
//! pace the guest reads it.
//!
//! The UART takes at most its FIFO (64 bytes) at a time, and nothing tells the VMM when the
//! guest has read it. So the input read from stdin waits here while the FIFO is full: stdin is
//! not watched meanwhile (the host side's writes block, as a pipe's would), and a timer retries
//! every [`RETRY`]. Nothing is dropped. The end of input reaches the guest as the terminal's
//! end-of-file character (Ctrl-D, which a console in canonical mode turns into end of file for
//! its reader).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::timerfd::TimerFd;

use crate::devices::serial::SerialDevice;
use crate::error::VmmError;

/// How often input waiting for FIFO room is offered again.
pub const RETRY: Duration = Duration::from_millis(2);
/// The most input read ahead of the guest.
const READ_AHEAD: usize = 4096;
/// What the end of input becomes: VEOF, Ctrl-D.
const END_OF_FILE: u8 = 0x04;

const SOURCE: u32 = 0;
const TIMER: u32 = 1;

/// Feeds `source` (the VMM's stdin) into the serial console.
pub struct ConsoleInput {
    serial: Arc<Mutex<SerialDevice>>,
    source: RawFd,
    timer: TimerFd,
    /// Read and not yet taken by the UART.
    pending: Vec<u8>,
    watching_source: bool,
    ended: bool,
}

impl ConsoleInput {
    /// Input from stdin.
    pub fn stdin(serial: Arc<Mutex<SerialDevice>>) -> Result<ConsoleInput, VmmError> {
        ConsoleInput::from_fd(serial, libc::STDIN_FILENO)
    }

    /// Input from `source`, which must stay open while the loop runs.
    pub fn from_fd(serial: Arc<Mutex<SerialDevice>>, source: RawFd) -> Result<ConsoleInput, VmmError> {
        Ok(ConsoleInput {
            serial,
            source,
            timer: TimerFd::new().map_err(|e| VmmError::io("creating the console input timer")(e.into()))?,
            pending: Vec::new(),
            watching_source: false,
            ended: false,
        })
    }

    /// Offers the pending bytes to the UART; returns whether all were taken.
    fn offer(&mut self) -> bool {
        if !self.pending.is_empty() {
            let taken = self
                .serial
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .enqueue_input(&self.pending);
            self.pending.drain(..taken);
        }
        self.pending.is_empty()
    }

    fn read_source(&mut self) {
        let mut buf = [0u8; READ_AHEAD];
        // SAFETY: read writes at most buf.len() bytes into buf.
        let n = unsafe { libc::read(self.source, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            n if n > 0 => self.pending.extend_from_slice(&buf[..n as usize]),
            n if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => {
                // End of input, or an error that will not go away.
                self.ended = true;
                self.pending.push(END_OF_FILE);
            }
        }
    }

    /// Watches the source only while nothing waits, and runs the timer only while something does.
    fn settle(&mut self, ops: &mut EventOps) {
        let waiting = !self.pending.is_empty();
        let want_source = !waiting && !self.ended;
        if want_source != self.watching_source {
            let ev = Events::with_data_raw(self.source, SOURCE, EventSet::IN);
            let done = if want_source { ops.add(ev) } else { ops.remove(ev) };
            if done.is_ok() {
                self.watching_source = want_source;
            }
        }
        let _ = if waiting {
            self.timer.reset(RETRY, Some(RETRY))
        } else {
            self.timer.clear()
        };
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::with_data_raw(self.timer.as_raw_fd(), TIMER, EventSet::IN));
        self.settle(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TIMER => {
                let _ = self.timer.wait();
            }
            _ if events.event_set().intersects(EventSet::HANG_UP | EventSet::ERROR)
                && !events.event_set().contains(EventSet::IN) =>
            {
                self.ended = true;
                self.pending.push(END_OF_FILE);
            }
            _ => self.read_source(),
        }
        self.offer();
        self.settle(ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use crate::console_writer::ConsoleWriter;
    use crate::devices::serial::{SerialOut, Tail};
    use event_manager::{EventManager, SubscriberOps};
    use std::io::Write;
    use vmm_sys_util::eventfd::EventFd;

    type Shared = Arc<Mutex<dyn MutEventSubscriber + Send>>;

    fn device() -> Arc<Mutex<SerialDevice>> {
        let out = SerialOut::new(
            ConsoleWriter::spawn(Box::new(std::io::sink())).unwrap(),
            Arc::new(Mutex::new(Tail::default())),
        );
        Arc::new(Mutex::new(SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            out,
        )))
    }

    /// Reads what the guest would, byte by byte, from the UART's receive register.
    fn guest_reads(serial: &Arc<Mutex<SerialDevice>>) -> Vec<u8> {
        let mut got = Vec::new();
        let mut dev = serial.lock().unwrap();
        loop {
            let mut lsr = [0u8];
            dev.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                return got;
            }
            let mut byte = [0u8];
            dev.read(0, &mut byte);
            got.push(byte[0]);
        }
    }

    #[test]
    fn input_larger_than_the_fifo_arrives_whole_and_ends_with_ctrl_d() {
        let serial = device();
        let (read, write) = nix::unistd::pipe().unwrap();
        let input: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut writer = std::fs::File::from(write);
        writer.write_all(&input).unwrap();
        drop(writer);
        let mut manager: EventManager<Shared> = EventManager::new().unwrap();
        manager.add_subscriber(Arc::new(Mutex::new(
            ConsoleInput::from_fd(serial.clone(), read.as_raw_fd()).unwrap(),
        )));
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.last() != Some(&END_OF_FILE) {
            assert!(std::time::Instant::now() < deadline, "got {} bytes", got.len());
            manager.run_with_timeout(10).unwrap();
            got.extend(guest_reads(&serial));
        }
        assert_eq!(&got[..got.len() - 1], &input[..]);
        drop(read);
    }
}
