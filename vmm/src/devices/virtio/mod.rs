//! Virtio devices behind the virtio-mmio transport: the device model trait, and the block, net
//! and vsock devices. Queue work runs on the device thread (woken by ioeventfds), never on vCPU exits.

pub mod block;
pub mod mmio;
pub mod net;
pub mod vsock;

use std::os::fd::RawFd;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Feature bit 32: a modern (virtio 1.x) device.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// A virtio device model: its identity, features, config space, and what it does when a queue is
/// notified (or its backend fd is ready).
pub trait VirtioDevice: Send {
    /// The virtio device ID (1 = net, 2 = block, 19 = vsock).
    fn device_type(&self) -> u32;
    /// Each queue's maximum size, which also says how many queues there are.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver.
    fn features(&self) -> u64;
    /// Reads the device-specific config space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Handles a notification on queue `index`; returns whether the used ring changed (the guest
    /// should be interrupted).
    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool;
    /// A backend fd the device thread should watch for input (the tap), if any, and whether it
    /// wants to be woken for it right now.
    fn backend_fd(&self) -> Option<(RawFd, bool)> {
        None
    }
    /// Handles input on the backend fd; returns whether the used ring changed.
    fn process_backend(&mut self, _queues: &mut [Queue], _mem: &GuestMemoryMmap) -> bool {
        false
    }
    /// Returns the device to its state before activation (the driver wrote status 0).
    fn reset(&mut self) {}
}

/// Copies the part of `config` at `offset` into `data` (zeros past the end).
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
