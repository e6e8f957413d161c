//! The VM's devices: legacy PC ones on the I/O-port bus (serial console, keyboard controller for
//! reset, boot/exit port) and virtio devices on the MMIO bus.

pub mod bootexit;
pub mod i8042;
pub mod serial;
pub mod virtio;
