//! Just enough of the PC keyboard controller (ports 0x60 and 0x64) for Linux: its probe reads and
//! writes the controller configuration byte and gets answers at once (no 500 ms timeouts), and its
//! `reboot=k` path (command 0xFE, "pulse reset") ends the VM. vm-superio's i8042 answers nothing
//! but the reset, which would stall the driver's probe, hence this one.
//!
//! Every answer goes through a small output queue that never grows past [`OUTPUT_CAPACITY`]: a
//! guest that keeps asking for answers without reading them loses the newest ones (a real 8042
//! holds one byte), instead of growing the VMM's memory.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::BusDevice;
use crate::state::{Stop, StopReason};

const OFFSET_DATA: u64 = 0;
const OFFSET_COMMAND: u64 = 4;
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM: u8 = 0x04;
const STATUS_COMMAND: u8 = 0x08;
/// Keyboard not inhibited (a clear bit makes Linux warn "Keylock active").
const STATUS_UNLOCKED: u8 = 0x10;
/// The most answers kept unread; more are dropped.
pub const OUTPUT_CAPACITY: usize = 16;

/// What the next byte written to the data port means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataTarget {
    Keyboard,
    Ctr,
    OutputPort,
}

pub struct I8042 {
    stop: Arc<Stop>,
    ctr: u8,
    output_port: u8,
    status: u8,
    out: VecDeque<u8>,
    next_data: DataTarget,
}

impl I8042 {
    pub fn new(stop: Arc<Stop>) -> I8042 {
        I8042 {
            stop,
            ctr: 0x45,
            output_port: 0x01,
            status: STATUS_SYSTEM | STATUS_UNLOCKED,
            out: VecDeque::with_capacity(OUTPUT_CAPACITY),
            next_data: DataTarget::Keyboard,
        }
    }

    /// Queues one answer for the data port, or drops it when the queue is full.
    fn answer(&mut self, byte: u8) {
        if self.out.len() < OUTPUT_CAPACITY {
            self.out.push_back(byte);
        }
    }

    fn status(&self) -> u8 {
        self.status
            | if self.out.is_empty() {
                0
            } else {
                STATUS_OUTPUT_FULL
            }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            OFFSET_DATA => self.out.pop_front().unwrap_or(0),
            OFFSET_COMMAND => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            OFFSET_COMMAND => {
                self.status |= STATUS_COMMAND;
                match value {
                    CMD_READ_CTR => self.answer(self.ctr),
                    CMD_WRITE_CTR => self.next_data = DataTarget::Ctr,
                    CMD_SELF_TEST => self.answer(0x55),
                    CMD_KBD_TEST => self.answer(0x00),
                    CMD_READ_OUTPUT_PORT => self.answer(self.output_port),
                    CMD_WRITE_OUTPUT_PORT => self.next_data = DataTarget::OutputPort,
                    CMD_RESET_CPU => self.stop.request(StopReason::Reset),
                    _ => {}
                }
            }
            OFFSET_DATA => {
                self.status &= !STATUS_COMMAND;
                match self.next_data {
                    DataTarget::Ctr => self.ctr = value,
                    DataTarget::OutputPort => self.output_port = value,
                    // No keyboard behind it: acknowledge any keyboard command.
                    DataTarget::Keyboard => self.answer(0xfa),
                }
                self.next_data = DataTarget::Keyboard;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_round_trips_and_self_test_passes() {
        let stop = Arc::new(Stop::new().unwrap());
        let mut kbd = I8042::new(stop.clone());
        let mut b = [0u8];
        kbd.read(OFFSET_COMMAND, &mut b);
        assert_eq!(b[0] & STATUS_OUTPUT_FULL, 0);
        kbd.write(OFFSET_COMMAND, &[CMD_WRITE_CTR]);
        kbd.write(OFFSET_DATA, &[0x30]);
        kbd.write(OFFSET_COMMAND, &[CMD_READ_CTR]);
        kbd.read(OFFSET_COMMAND, &mut b);
        assert_eq!(b[0] & STATUS_OUTPUT_FULL, STATUS_OUTPUT_FULL);
        kbd.read(OFFSET_DATA, &mut b);
        assert_eq!(b[0], 0x30);
        kbd.write(OFFSET_COMMAND, &[CMD_SELF_TEST]);
        kbd.read(OFFSET_DATA, &mut b);
        assert_eq!(b[0], 0x55);
        assert!(!stop.is_requested());
    }

    #[test]
    fn pulse_reset_stops_the_vm() {
        let stop = Arc::new(Stop::new().unwrap());
        let mut kbd = I8042::new(stop.clone());
        kbd.write(OFFSET_COMMAND, &[CMD_RESET_CPU]);
        assert_eq!(stop.reason(), Some(StopReason::Reset));
    }

    /// Reads answers from the data port until the status says the output buffer is empty.
    fn read_all(kbd: &mut I8042) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut b = [0u8];
        loop {
            kbd.read(OFFSET_COMMAND, &mut b);
            if b[0] & STATUS_OUTPUT_FULL == 0 {
                return seen;
            }
            kbd.read(OFFSET_DATA, &mut b);
            seen.push(b[0]);
        }
    }

    #[test]
    fn a_million_unread_answers_keep_the_output_queue_at_its_cap() {
        let stop = Arc::new(Stop::new().unwrap());
        let mut kbd = I8042::new(stop.clone());
        for i in 0..1_000_000u32 {
            // Commands with an answer, and keyboard bytes (each acknowledged), never read.
            if i % 2 == 0 {
                kbd.write(OFFSET_COMMAND, &[CMD_SELF_TEST]);
            } else {
                kbd.write(OFFSET_DATA, &[0xf4]);
            }
            assert!(kbd.out.len() <= OUTPUT_CAPACITY);
        }
        assert_eq!(kbd.out.len(), OUTPUT_CAPACITY);
        assert!(kbd.out.capacity() < 4 * OUTPUT_CAPACITY, "{}", kbd.out.capacity());
        // The oldest answers are kept, in order; the rest were dropped.
        let seen = read_all(&mut kbd);
        assert_eq!(seen.len(), OUTPUT_CAPACITY);
        assert_eq!(&seen[..2], &[0x55, 0xfa]);
        // Once read, the controller answers again.
        kbd.write(OFFSET_COMMAND, &[CMD_READ_CTR]);
        assert_eq!(read_all(&mut kbd), [0x45]);
        assert!(!stop.is_requested());
    }
}
