//! The 16550 UART at COM1 (vm-superio's emulation): the guest console. Output goes to a sink (the
//! VMM's stdout, usually) line by line with the tty's CRLF turned back into LF, so VM output
//! matches container output; the last lines are kept for crash reports. Input, when enabled, comes
//! from the VMM's stdin through the device thread.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::state::{Stop, StopReason};

/// How many of the console's last lines a crash report shows.
pub const TAIL_LINES: usize = 40;
/// Longest line kept in the tail (longer ones are cut).
const TAIL_LINE_MAX: usize = 512;
/// Output is passed on at each newline or when this much is buffered.
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

/// What the kernel prints as it powers off or halts (`pr_emerg`, so shown even with `quiet`;
/// without ACPI a power-off request becomes a halt). Either only halts the vCPUs, which KVM's
/// in-kernel LAPIC keeps from the VMM: these lines are the only sign of it.
pub const POWER_DOWN_LINES: &[&str] = &["reboot: Power down", "reboot: System halted"];

/// The UART's output side: a line-buffered sink with CRLF → LF, feeding the tail, and watching
/// for the kernel's power-off line.
pub struct SerialOut {
    sink: Box<dyn Write + Send>,
    tail: Arc<Mutex<Tail>>,
    buf: Vec<u8>,
    pending_cr: bool,
    stop: Option<Arc<Stop>>,
}

impl SerialOut {
    pub fn new(sink: Box<dyn Write + Send>, tail: Arc<Mutex<Tail>>) -> SerialOut {
        SerialOut {
            sink,
            tail,
            buf: Vec::with_capacity(FLUSH_AT),
            pending_cr: false,
            stop: None,
        }
    }

    /// Ends the VM (as a power-off) when the kernel prints one of [`POWER_DOWN_LINES`].
    pub fn stop_on_power_down(mut self, stop: Arc<Stop>) -> SerialOut {
        self.stop = Some(stop);
        self
    }

    /// Passes everything buffered on to the sink.
    pub fn drain(&mut self) -> io::Result<()> {
        if self.pending_cr {
            self.buf.push(b'\r');
            self.pending_cr = false;
        }
        if !self.buf.is_empty() {
            self.sink.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.sink.flush()
    }
}

impl Write for SerialOut {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        {
            let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            for &b in data {
                if tail.push(b)
                    && tail
                        .last_line()
                        .is_some_and(|l| POWER_DOWN_LINES.iter().any(|p| l.ends_with(p)))
                {
                    if let Some(stop) = &self.stop {
                        stop.request(StopReason::PowerOff);
                    }
                }
            }
        }
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
        if line_end || self.buf.len() >= FLUSH_AT {
            self.sink.write_all(&self.buf)?;
            self.sink.flush()?;
            self.buf.clear();
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

    /// Passes buffered output on (at the end of the VM).
    pub fn drain_output(&mut self) -> io::Result<()> {
        self.uart.writer_mut().drain()
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
            // A failed console write (closed stdout) must not stop the guest.
            let _ = self.uart.write(off, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn device() -> (SerialDevice, Shared, Arc<Mutex<Tail>>, EventFd) {
        let sink = Shared::default();
        let tail = Arc::new(Mutex::new(Tail::default()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = SerialDevice::new(
            irq.try_clone().unwrap(),
            SerialOut::new(Box::new(sink.clone()), tail.clone()),
        );
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
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
        type_text(&mut dev, b"ld\r\n");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nworld\n");
        // A lone CR is kept; the unfinished line comes out on drain.
        type_text(&mut dev, b"a\rb");
        dev.drain_output().unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nworld\na\rb");
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

    #[test]
    fn the_kernel_power_down_line_stops_the_vm() {
        let stop = Arc::new(Stop::new().unwrap());
        let tail = Arc::new(Mutex::new(Tail::default()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = SerialOut::new(Box::new(io::sink()), tail).stop_on_power_down(stop.clone());
        let mut dev = SerialDevice::new(irq, out);
        type_text(&mut dev, b"echo reboot: Power downstairs\r\n");
        assert!(!stop.is_requested());
        type_text(&mut dev, b"[    1.234] reboot: Power down\r\n");
        assert_eq!(stop.reason(), Some(StopReason::PowerOff));
        let stop = Arc::new(Stop::new().unwrap());
        let tail = Arc::new(Mutex::new(Tail::default()));
        let out = SerialOut::new(Box::new(io::sink()), tail).stop_on_power_down(stop.clone());
        let mut dev = SerialDevice::new(EventFd::new(libc::EFD_NONBLOCK).unwrap(), out);
        type_text(&mut dev, b"reboot: System halted\r\n");
        assert_eq!(stop.reason(), Some(StopReason::PowerOff));
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
