//! The virtio-mmio transport (version 2, modern): the register window a driver uses to negotiate
//! features, configure queues and drive the device status through its states; interrupts go out
//! through an irqfd, queue notifications come in through ioeventfds (one per queue).

use std::os::fd::{AsRawFd, RawFd};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{VirtioDevice, VIRTIO_F_VERSION_1};
use crate::bus::BusDevice;
use crate::error::VmmError;

/// Offset of the QueueNotify register (where the ioeventfds listen).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;
const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5342_5856; // "VXBS"
const CONFIG_SPACE_OFFSET: u64 = 0x100;

/// Where the device is in the driver's initialisation sequence (virtio 1.x §3.1), derived from
/// the status register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Status 0: nothing negotiated.
    Reset,
    /// The driver has seen the device.
    Acknowledged,
    /// The driver knows how to drive it.
    DriverLoaded,
    /// Features negotiated; queues may be configured.
    FeaturesOk,
    /// DRIVER_OK: the device processes queues.
    Active,
    /// The driver gave up, or the device needs a reset.
    Failed,
}

pub struct MmioTransport<D: VirtioDevice> {
    pub device: D,
    pub queues: Vec<Queue>,
    mem: GuestMemoryMmap,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
    irq: EventFd,
    queue_evts: Vec<EventFd>,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// A transport for `device` raising `irq` (an eventfd registered as an irqfd).
    pub fn new(device: D, mem: GuestMemoryMmap, irq: EventFd) -> Result<Self, VmmError> {
        let mut queues = Vec::new();
        let mut queue_evts = Vec::new();
        for &max in device.queue_max_sizes() {
            queues.push(Queue::new(max).map_err(|e| VmmError::Setup(format!("virtio queue: {e}")))?);
            queue_evts
                .push(EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::io("creating a queue eventfd"))?);
        }
        Ok(MmioTransport {
            device,
            queues,
            mem,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            interrupt_status: 0,
            irq,
            queue_evts,
        })
    }

    pub fn state(&self) -> DeviceState {
        let s = self.status;
        if s & (VIRTIO_CONFIG_S_FAILED | VIRTIO_CONFIG_S_NEEDS_RESET) != 0 {
            DeviceState::Failed
        } else if s & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            DeviceState::Active
        } else if s & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            DeviceState::FeaturesOk
        } else if s & VIRTIO_CONFIG_S_DRIVER != 0 {
            DeviceState::DriverLoaded
        } else if s & VIRTIO_CONFIG_S_ACKNOWLEDGE != 0 {
            DeviceState::Acknowledged
        } else {
            DeviceState::Reset
        }
    }

    /// The eventfds that stand for writes to QueueNotify, one per queue.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    pub fn queue_evt_fds(&self) -> Vec<RawFd> {
        self.queue_evts.iter().map(|e| e.as_raw_fd()).collect()
    }

    /// The features both sides agreed on.
    pub fn acked_features(&self) -> u64 {
        self.driver_features
    }

    fn signal_used(&mut self) {
        self.interrupt_status |= VIRTIO_MMIO_INT_VRING;
        // A full counter already means "interrupt pending".
        let _ = self.irq.write(1);
    }

    /// Device-thread handler for queue `index`'s notification.
    pub fn handle_queue_event(&mut self, index: usize) {
        if let Some(evt) = self.queue_evts.get(index) {
            // Consume the notification; EAGAIN just means it was already consumed.
            let _ = evt.read();
        }
        if self.state() != DeviceState::Active || index >= self.queues.len() {
            return;
        }
        if self.device.process_queue(index, &mut self.queues, &self.mem) {
            self.signal_used();
        }
    }

    /// Device-thread handler for backend input.
    pub fn handle_backend_event(&mut self) {
        if self.state() != DeviceState::Active {
            return;
        }
        if self.device.process_backend(&mut self.queues, &self.mem) {
            self.signal_used();
        }
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
    }

    fn set_status(&mut self, new: u32) {
        if new == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // The driver only ever adds bits (virtio 1.x §2.1.2); anything else is a driver bug.
        if new & old != old {
            self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
            return;
        }
        let added = new & !old;
        let mut accepted = old;
        let ordered = [
            (VIRTIO_CONFIG_S_ACKNOWLEDGE, 0),
            (VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_ACKNOWLEDGE),
            (VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER),
            (VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK),
        ];
        for (bit, needs) in ordered {
            if added & bit == 0 {
                continue;
            }
            if accepted & needs != needs {
                continue;
            }
            match bit {
                VIRTIO_CONFIG_S_FEATURES_OK => {
                    let offered = self.device.features();
                    // Refusing FEATURES_OK (not setting it) is how a device says no.
                    if self.driver_features & !offered != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0
                    {
                        continue;
                    }
                }
                VIRTIO_CONFIG_S_DRIVER_OK => {
                    let mem = &self.mem;
                    if self.queues.iter().any(|q| q.ready() && !q.is_valid(mem)) {
                        accepted |= VIRTIO_CONFIG_S_NEEDS_RESET;
                        continue;
                    }
                }
                _ => {}
            }
            accepted |= bit;
        }
        if added & VIRTIO_CONFIG_S_FAILED != 0 {
            accepted |= VIRTIO_CONFIG_S_FAILED;
        }
        self.status = accepted;
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        // Queues are configured between FEATURES_OK and DRIVER_OK only.
        if self.state() != DeviceState::FeaturesOk {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => self.device.device_type(),
            0x00c => VENDOR_ID,
            0x010 => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            0x034 => queue.map_or(0, |q| u32::from(q.max_size())),
            0x044 => queue.map_or(0, |q| u32::from(q.ready())),
            0x060 => self.interrupt_status,
            0x070 => self.status,
            0x0fc => 0, // ConfigGeneration: the config space never changes under the driver.
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            0x014 => self.device_features_sel = value,
            0x020 if self.state() == DeviceState::DriverLoaded => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32),
                _ => {}
            },
            0x024 => self.driver_features_sel = value,
            0x030 => self.queue_sel = value,
            0x038 => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            0x044 => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            QUEUE_NOTIFY_OFFSET => {
                // Normally an ioeventfd catches this write; if not, hand it to the device thread
                // the same way.
                if let Some(evt) = self.queue_evts.get(value as usize) {
                    let _ = evt.write(1);
                }
            }
            0x064 => self.interrupt_status &= !value,
            0x070 => self.set_status(value),
            0x080 => self.with_queue(|q| q.set_desc_table_address(Some(value), None)),
            0x084 => self.with_queue(|q| q.set_desc_table_address(None, Some(value))),
            0x090 => self.with_queue(|q| q.set_avail_ring_address(Some(value), None)),
            0x094 => self.with_queue(|q| q.set_avail_ring_address(None, Some(value))),
            0x0a0 => self.with_queue(|q| q.set_used_ring_address(Some(value), None)),
            0x0a4 => self.with_queue(|q| q.set_used_ring_address(None, Some(value))),
            _ => {}
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }
}

impl<D: VirtioDevice> BusDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        data.fill(0);
        if data.len() == 4 {
            data.copy_from_slice(&self.read_register(offset).to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            // Neither device has a writable config field.
            return;
        }
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::Block;
    use vm_memory::GuestAddress;

    fn transport() -> MmioTransport<Block> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(4096).unwrap();
        let block = Block::new(file, false, "t").unwrap();
        MmioTransport::new(block, mem, EventFd::new(libc::EFD_NONBLOCK).unwrap()).unwrap()
    }

    fn w(t: &mut MmioTransport<Block>, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn r(t: &mut MmioTransport<Block>, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn negotiate(t: &mut MmioTransport<Block>, high_features: u32) {
        w(t, 0x70, 1);
        w(t, 0x70, 1 | 2);
        w(t, 0x24, 1);
        w(t, 0x20, high_features);
        w(t, 0x70, 1 | 2 | 8);
    }

    #[test]
    fn identifies_as_a_modern_virtio_mmio_device() {
        let mut t = transport();
        assert_eq!(r(&mut t, 0), MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 8), 2, "block device id");
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10) & 1, 1, "VERSION_1 offered");
        assert_eq!(r(&mut t, 0x34), 256, "queue max size");
        // Config space: capacity in sectors.
        let mut cap = [0u8; 8];
        t.read(0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
    }

    #[test]
    fn status_walks_the_states_and_refuses_features_without_version_1() {
        let mut t = transport();
        assert_eq!(t.state(), DeviceState::Reset);
        negotiate(&mut t, 0);
        assert_eq!(
            t.state(),
            DeviceState::DriverLoaded,
            "no VERSION_1: FEATURES_OK refused"
        );
        assert_eq!(r(&mut t, 0x70) & 8, 0);
        w(&mut t, 0x70, 0);
        negotiate(&mut t, 1);
        assert_eq!(t.state(), DeviceState::FeaturesOk);
        // DRIVER_OK before any queue is ready activates (no queue to check).
        w(&mut t, 0x70, 1 | 2 | 8 | 4);
        assert_eq!(t.state(), DeviceState::Active);
        // Queue registers are frozen once active.
        w(&mut t, 0x38, 16);
        assert_eq!(t.queues[0].size(), 256);
        // Reset returns to the start.
        w(&mut t, 0x70, 0);
        assert_eq!(t.state(), DeviceState::Reset);
        assert_eq!(t.acked_features(), 0);
    }

    #[test]
    fn skipping_a_step_or_clearing_bits_is_not_accepted() {
        let mut t = transport();
        w(&mut t, 0x70, 1 | 4);
        assert_eq!(
            t.state(),
            DeviceState::Acknowledged,
            "DRIVER_OK without FEATURES_OK"
        );
        w(&mut t, 0x70, 0);
        negotiate(&mut t, 1);
        w(&mut t, 0x70, 1);
        assert_eq!(t.state(), DeviceState::Failed);
    }

    #[test]
    fn a_ready_queue_outside_guest_memory_keeps_the_device_inactive() {
        let mut t = transport();
        negotiate(&mut t, 1);
        w(&mut t, 0x30, 0);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, 0xf000_0000);
        w(&mut t, 0x90, 0x1000);
        w(&mut t, 0xa0, 0x2000);
        w(&mut t, 0x44, 1);
        w(&mut t, 0x70, 1 | 2 | 8 | 4);
        assert_eq!(t.state(), DeviceState::Failed);
        assert_ne!(r(&mut t, 0x70) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    }

    #[test]
    fn interrupt_ack_clears_the_status_bit_and_notify_wakes_the_queue_eventfd() {
        let mut t = transport();
        t.signal_used();
        assert_eq!(r(&mut t, 0x60), 1);
        w(&mut t, 0x64, 1);
        assert_eq!(r(&mut t, 0x60), 0);
        w(&mut t, QUEUE_NOTIFY_OFFSET, 0);
        assert_eq!(t.queue_evts()[0].read().unwrap(), 1);
    }
}
