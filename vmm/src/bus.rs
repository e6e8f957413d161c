//! Address buses for the vCPU threads: an I/O-port bus and an MMIO bus, each a sorted list of
//! non-overlapping ranges with the device behind each. A vCPU exit on an address no device
//! claims reads as all ones (an empty ISA bus) and ignores writes.

use std::sync::{Arc, Mutex};

use crate::error::VmmError;

/// A device on a bus, addressed by offset from the start of its range.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared device handle.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// One address space's devices.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: Vec<(u64, u64, SharedDevice)>,
}

impl Bus {
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Places `device` at `[base, base + len)`; refuses overlaps.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), VmmError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(VmmError::Setup(format!("bad bus range {base:#x}+{len:#x}")));
        };
        if self.ranges.iter().any(|(b, l, _)| base < b + l && *b < end) {
            return Err(VmmError::Setup(format!(
                "bus range {base:#x}..{end:#x} overlaps another device"
            )));
        }
        self.ranges.push((base, len, device));
        self.ranges.sort_by_key(|(b, _, _)| *b);
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let i = self.ranges.partition_point(|(b, _, _)| *b <= addr);
        let (base, len, dev) = self.ranges.get(i.checked_sub(1)?)?;
        (addr < base + len).then_some((addr - base, dev))
    }

    /// Reads from whatever is at `addr`; returns false (and all-ones data) when nothing is.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                // A device whose lock a panicking thread poisoned still answers: the state is plain
                // registers.
                let mut d = dev.lock().unwrap_or_else(|p| p.into_inner());
                d.read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes to whatever is at `addr`; returns false when nothing is.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                let mut d = dev.lock().unwrap_or_else(|p| p.into_inner());
                d.write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(Vec<(u64, u8)>);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data[0]));
        }
    }

    #[test]
    fn routes_by_range_and_reports_unclaimed_addresses() {
        let a = Arc::new(Mutex::new(Reg(Vec::new())));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        let mut d = [0u8; 1];
        assert!(bus.read(0x3fa, &mut d));
        assert_eq!(d[0], 2);
        assert!(!bus.read(0x400, &mut d));
        assert_eq!(d[0], 0xff);
        assert!(!bus.read(0x3f7, &mut d));
        assert!(bus.write(0x3ff, &[9]));
        assert_eq!(a.lock().unwrap().0, vec![(7, 9)]);
        assert!(bus.insert(0x3fc, 8, a.clone()).is_err());
        assert!(bus.insert(0x3f0, 8, a.clone()).is_ok());
        assert!(bus.insert(0x500, 0, a).is_err());
    }
}
