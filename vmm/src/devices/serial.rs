//! The 16550 UART at COM1 (vm-superio's emulation): the guest console. Output is handed line by
//! line, with the tty's CRLF turned back into LF (so VM output matches container output), to the
//! console writer ([`crate::console_writer`]), whose thread writes it to the sink (the VMM's
//! stdout, usually): a stalled sink never blocks the vCPU writing the UART. The last lines are
//! kept for crash reports, and complete lines go past the power-down watch
//! ([`crate::console_signals`]). Input, when enabled, comes from the VMM's stdin through the
//! device thread.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::console_signals::{is_power_down_line, PowerDownWatch};
use crate::console_writer::{ConsoleEnd, ConsoleWriter};

pub use crate::console_signals::POWER_DOWN_LINES;

/// How many of the console's last lines a crash report shows.
pub const TAIL_LINES: usize = 40;
/// Longest line kept in the tail (longer ones are cut).
const TAIL_LINE_MAX: usize = 512;
/// Output is passed on at each newline or when this much is buffered (so the console writer's
/// chunks are at most this long).
const FLUSH_AT: usize = 4096;

/// Raises the serial IRQ by writing its irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The console's last lines.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
    current: Vec<u8>,
}

impl Tail {
    /// Adds one byte; returns true when it completed a line.
    fn push(&mut self, byte: u8) -> bool {
        match byte {
            b'\n' => {
                let line = String::from_utf8_lossy(&self.current)
                    .trim_end_matches('\r')
                    .to_string();
                self.current.clear();
                if self.lines.len() == TAIL_LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(line);
                true
            }
            _ if self.current.len() < TAIL_LINE_MAX => {
                self.current.push(byte);
                false
            }
            _ => false,
        }
    }

    fn last_line(&self) -> Option<&str> {
        self.lines.back().map(String::as_str)
    }

    /// The last complete lines, then the unfinished one if any.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lines.iter().cloned().collect();
        if !self.current.is_empty() {
            out.push(String::from_utf8_lossy(&self.current).to_string());
        }
        out
    }

    /// Whether any kept line mentions a kernel panic.
    pub fn has_panic(&self) -> bool {
        self.lines().iter().any(|l| l.contains("Kernel panic"))
    }
}

/// The UART's output side: CRLF → LF, line-buffered, feeding the tail and the power-down watch,
/// handing each line to the console writer. Nothing here waits for the sink.
pub struct SerialOut {
    writer: ConsoleWriter,
    tail: Arc<Mutex<Tail>>,
    buf: Vec<u8>,
    pending_cr: bool,
    watch: Option<PowerDownWatch>,
    /// The console is a terminal's: bytes pass unchanged (CRLF kept) and at once (a prompt has
    /// no line end).
    raw: bool,
}

impl SerialOut {
    pub fn new(writer: ConsoleWriter, tail: Arc<Mutex<Tail>>) -> SerialOut {
        SerialOut {
            writer,
            tail,
            buf: Vec::with_capacity(FLUSH_AT),
            pending_cr: false,
            watch: None,
            raw: false,
        }
    }

    /// Passes bytes on unchanged and at once, for a console the host relays to a terminal in raw
    /// mode (`sandbox run -t`).
    pub fn raw(mut self) -> SerialOut {
        self.raw = true;
        self
    }

    /// Shows every complete line to `watch`, which ends the VM on the kernel's power-down line
    /// (before init only).
    pub fn watch_power_down(mut self, watch: PowerDownWatch) -> SerialOut {
        self.watch = Some(watch);
        self
    }

    /// Passes the unfinished line on and closes the console, waiting for the writer while it
    /// makes progress (a sink stalled for `stall` is left behind).
    pub fn finish(&mut self, stall: Duration) -> ConsoleEnd {
        if self.pending_cr {
            self.buf.push(b'\r');
            self.pending_cr = false;
        }
        self.pass_on();
        self.writer.close(stall)
    }

    /// Bytes dropped so far because the sink did not keep up or failed.
    pub fn dropped(&self) -> u64 {
        self.writer.dropped()
    }

    /// Adds `data` to the tail, showing each line it completes to the watch.
    fn watch_lines(&self, data: &[u8]) {
        // Lock order: the tail, then (in the watch) the guest reports; nothing takes them the
        // other way round.
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        for &b in data {
            if !tail.push(b) {
                continue;
            }
            if let (Some(watch), Some(line)) = (&self.watch, tail.last_line()) {
                if is_power_down_line(line) {
                    watch.on_line(line);
                }
            }
        }
    }

    /// Buffers `data` with CRLF turned into LF; returns whether a line ended.
    fn translate(&mut self, data: &[u8]) -> bool {
        let mut line_end = false;
        for &b in data {
            if self.pending_cr {
                self.pending_cr = false;
                if b != b'\n' {
                    self.buf.push(b'\r');
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    self.buf.push(b);
                    line_end = true;
                }
                _ => self.buf.push(b),
            }
        }
        line_end
    }

    /// Hands the buffer to the console writer (which drops it when its queue is full).
    fn pass_on(&mut self) {
        self.writer.send(&self.buf);
        self.buf.clear();
    }
}

impl Write for SerialOut {
    /// Never fails and never waits for the sink.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.watch_lines(data);
        if self.raw {
            self.buf.extend_from_slice(data);
            self.pass_on();
            return Ok(data.len());
        }
        if self.translate(data) || self.buf.len() >= FLUSH_AT {
            self.pass_on();
        }
        Ok(data.len())
    }

    /// The UART flushes after every byte; buffering happens here instead, so this does nothing.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// COM1 on the I/O-port bus.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, SerialOut>,
}

impl SerialDevice {
    pub fn new(irq: EventFd, out: SerialOut) -> SerialDevice {
        SerialDevice {
            uart: Serial::new(IrqTrigger(irq), out),
        }
    }

    /// Queues input bytes for the guest; returns how many fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity();
        let take = bytes.len().min(room);
        if take == 0 {
            return 0;
        }
        self.uart.enqueue_raw_bytes(&bytes[..take]).unwrap_or(0)
    }

    /// Passes buffered output on and closes the console (at the end of the VM); see
    /// [`SerialOut::finish`].
    pub fn finish_output(&mut self, stall: Duration) -> ConsoleEnd {
        self.uart.writer_mut().finish(stall)
    }

    /// Console bytes dropped so far.
    pub fn dropped_output(&self) -> u64 {
        self.uart.writer().dropped()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) {
            // Console output never fails (the writer drops what it cannot pass on); an error
            // here could only be the IRQ eventfd's, which must not stop the guest either.
            let _ = self.uart.write(off, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bootexit::BootExit;
    use crate::halt_check::HaltCheck;
    use crate::state::{Clock, GuestReports, Stop, StopReason};
    use sandbox_protocol::exit_device::Event;
    use std::sync::mpsc;
    use std::time::Instant;

    /// How long a test waits for the console writer.
    const WAIT: Duration = Duration::from_secs(10);

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        /// Waits until the writer thread has delivered `expected`, then returns what it has.
        fn wait_for(&self, expected: &[u8]) -> Vec<u8> {
            let deadline = Instant::now() + WAIT;
            loop {
                let seen = self.0.lock().unwrap().clone();
                if seen == expected || Instant::now() > deadline {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// A sink whose writes block until the test drops the other end of the channel.
    struct Stalled(mpsc::Receiver<()>);
    impl Write for Stalled {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn out(sink: impl Write + Send + 'static, tail: Arc<Mutex<Tail>>) -> SerialOut {
        SerialOut::new(ConsoleWriter::spawn(Box::new(sink)).unwrap(), tail)
    }

    fn device() -> (SerialDevice, Shared, Arc<Mutex<Tail>>, EventFd) {
        let sink = Shared::default();
        let tail = Arc::new(Mutex::new(Tail::default()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = SerialDevice::new(irq.try_clone().unwrap(), out(sink.clone(), tail.clone()));
        (dev, sink, tail, irq)
    }

    fn type_text(dev: &mut SerialDevice, text: &[u8]) {
        for &b in text {
            dev.write(0, &[b]);
        }
    }

    #[test]
    fn guest_output_reaches_the_sink_by_line_with_crlf_as_lf() {
        let (mut dev, sink, _, _) = device();
        type_text(&mut dev, b"hello\r\nwor");
        assert_eq!(sink.wait_for(b"hello\n"), b"hello\n");
        type_text(&mut dev, b"ld\r\n");
        assert_eq!(sink.wait_for(b"hello\nworld\n"), b"hello\nworld\n");
        // A lone CR is kept; the unfinished line comes out at the end.
        type_text(&mut dev, b"a\rb");
        let end = dev.finish_output(WAIT);
        assert_eq!(
            end,
            ConsoleEnd {
                complete: true,
                dropped: 0,
                abandoned: 0
            }
        );
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nworld\na\rb");
    }

    #[test]
    fn a_fast_sink_gets_all_output_in_order() {
        let (mut dev, sink, _, _) = device();
        let mut expected = Vec::new();
        for i in 0..2_000 {
            type_text(
                &mut dev,
                format!("line {i}: {}\r\n", "x".repeat(i % 97)).as_bytes(),
            );
            expected.extend_from_slice(format!("line {i}: {}\n", "x".repeat(i % 97)).as_bytes());
        }
        let end = dev.finish_output(WAIT);
        assert!(end.complete, "{end:?}");
        assert_eq!(end.lost(), 0);
        assert_eq!(dev.dropped_output(), 0);
        assert_eq!(*sink.0.lock().unwrap(), expected);
    }

    #[test]
    fn a_stalled_sink_never_blocks_the_guest_or_the_end() {
        let (release, rx) = mpsc::channel();
        let tail = Arc::new(Mutex::new(Tail::default()));
        let mut dev = SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            out(Stalled(rx), tail.clone()),
        );
        // On another thread, so that a blocking write fails the test instead of hanging it.
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let line = [b'y'; 99];
            // 4 MiB of output: far more than the console writer queues.
            for _ in 0..(4 << 20) / 100 {
                type_text(&mut dev, &line);
                type_text(&mut dev, b"\r\n");
            }
            let dropped = dev.dropped_output();
            let end = dev.finish_output(Duration::from_millis(200));
            let _ = done.send((dropped, end));
        });
        let (dropped, end) = finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the guest's console writes blocked on a stalled sink");
        assert!(dropped >= 3_000_000, "{dropped}");
        assert!(!end.complete);
        assert_eq!(end.lost(), ((4 << 20) / 100) * 100);
        // The tail still saw everything.
        assert_eq!(tail.lock().unwrap().lines().last().map(String::len), Some(99));
        drop(release);
    }

    #[test]
    fn the_tail_keeps_the_last_lines_and_spots_a_panic() {
        let (mut dev, _, tail, _) = device();
        for i in 0..(TAIL_LINES + 5) {
            type_text(&mut dev, format!("line {i}\r\n").as_bytes());
        }
        type_text(
            &mut dev,
            b"Kernel panic - not syncing: Attempted to kill init!\r\n",
        );
        let lines = tail.lock().unwrap().lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[0], "line 6");
        assert!(tail.lock().unwrap().has_panic());
    }

    /// A console whose power-down watch reads what a boot/exit device records.
    fn watched() -> (SerialDevice, BootExit, Arc<Stop>, Arc<HaltCheck>) {
        let stop = Arc::new(Stop::new().unwrap());
        let reports = Arc::new(Mutex::new(GuestReports::default()));
        let exit = BootExit::new(Clock::new(Instant::now()), reports.clone());
        let tail = Arc::new(Mutex::new(Tail::default()));
        let check = Arc::new(HaltCheck::new(1).unwrap());
        let watch = PowerDownWatch::new(stop.clone(), reports).with_halt_check(check.clone());
        let out = out(io::sink(), tail).watch_power_down(watch);
        let dev = SerialDevice::new(EventFd::new(libc::EFD_NONBLOCK).unwrap(), out);
        (dev, exit, stop, check)
    }

    #[test]
    fn the_kernel_power_down_line_stops_the_vm_before_init() {
        let (mut dev, _, stop, _) = watched();
        type_text(&mut dev, b"echo reboot: Power downstairs\r\n");
        assert!(!stop.is_requested());
        type_text(&mut dev, b"[    1.234] reboot: Power down\r\n");
        assert_eq!(stop.reason(), Some(StopReason::PowerOff));
        let (mut dev, _, stop, _) = watched();
        type_text(&mut dev, b"reboot: System halted\r\n");
        assert_eq!(stop.reason(), Some(StopReason::PowerOff));
    }

    #[test]
    fn a_workload_printing_the_power_down_line_does_not_stop_the_vm() {
        let (mut dev, mut exit, stop, check) = watched();
        type_text(&mut dev, b"[    0.500000] Run /init as init process\r\n");
        exit.write(0, &Event::InitStarted.encode().to_le_bytes());
        assert!(!check.running(Instant::now()));
        for line in POWER_DOWN_LINES {
            type_text(&mut dev, format!("{line}\r\n").as_bytes());
        }
        exit.write(0, &Event::Ready.encode().to_le_bytes());
        type_text(&mut dev, b"reboot: Power down\n");
        assert!(!stop.is_requested());
        // Only KVM's view of the vCPUs can end the VM now: the halt check was asked for.
        assert!(check.running(Instant::now()));
    }

    #[test]
    fn line_status_says_transmitter_empty_and_input_raises_the_irq() {
        let (mut dev, _, _, irq) = device();
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_eq!(lsr[0] & 0x60, 0x60, "THR and transmitter empty");
        // Enable the received-data interrupt, then feed input.
        dev.write(1, &[0x01]);
        assert_eq!(dev.enqueue_input(b"ls\n"), 3);
        assert!(irq.read().unwrap() >= 1);
        dev.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut byte = [0u8];
        dev.read(0, &mut byte);
        assert_eq!(byte[0], b'l');
    }
}
