//! The device thread: one event-manager loop that wakes on queue ioeventfds, the tap and stdin
//! (see [`crate::console_input`]), and does the device work there (vCPU threads never do). A
//! stop eventfd ends it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::mmio::{DeviceState, MmioTransport};
use crate::devices::virtio::VirtioDevice;
use crate::error::VmmError;

/// What the device thread holds.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

const BACKEND: u32 = u32::MAX;

/// Drives one virtio device: its queue notifications and its backend fd.
pub struct VirtioSubscriber<D: VirtioDevice> {
    transport: Arc<Mutex<MmioTransport<D>>>,
    backend_watched: bool,
}

impl<D: VirtioDevice> VirtioSubscriber<D> {
    pub fn new(transport: Arc<Mutex<MmioTransport<D>>>) -> Self {
        VirtioSubscriber {
            transport,
            backend_watched: false,
        }
    }

    fn sync_backend(&mut self, t: &MmioTransport<D>, ops: &mut EventOps) {
        if let Some((fd, want)) = t.device.backend_fd() {
            // Until the driver activates the device, backend input cannot go anywhere: watching
            // a readable tap then would only spin. The driver's first queue notification (it
            // fills the receive queue, then kicks it) brings us back here.
            let want = want && t.state() == DeviceState::Active;
            if want != self.backend_watched {
                let ev = Events::with_data_raw(fd, BACKEND, EventSet::IN);
                let done = if want { ops.add(ev) } else { ops.remove(ev) };
                if done.is_ok() {
                    self.backend_watched = want;
                }
            }
        }
    }
}

impl<D: VirtioDevice> MutEventSubscriber for VirtioSubscriber<D> {
    fn init(&mut self, ops: &mut EventOps) {
        let transport = self.transport.clone();
        let t = transport.lock().unwrap_or_else(|p| p.into_inner());
        for (i, fd) in t.queue_evt_fds().into_iter().enumerate() {
            // Registration only fails for a bad or duplicate fd, which would be a VMM bug; the
            // device then simply never wakes (and the guest times out on it).
            let _ = ops.add(Events::with_data_raw(fd, i as u32, EventSet::IN));
        }
        self.sync_backend(&t, ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let transport = self.transport.clone();
        let mut t = transport.lock().unwrap_or_else(|p| p.into_inner());
        match events.data() {
            BACKEND => t.handle_backend_event(),
            queue => t.handle_queue_event(queue as usize),
        }
        self.sync_backend(&t, ops);
    }
}

/// Ends the loop when its eventfd is written.
struct StopSubscriber {
    evt: EventFd,
    done: Arc<AtomicBool>,
}

impl MutEventSubscriber for StopSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.evt, EventSet::IN));
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.evt.read();
        self.done.store(true, Ordering::SeqCst);
    }
}

/// The running device thread.
pub struct DeviceThread {
    stop: EventFd,
    handle: JoinHandle<Result<(), String>>,
}

impl DeviceThread {
    /// Starts the loop over `subscribers`; if the loop fails or panics, `on_failure` is called
    /// with the reason (so the VM is stopped rather than left without its devices).
    pub fn spawn(
        subscribers: Vec<Subscriber>,
        on_failure: impl FnOnce(String) + Send + 'static,
    ) -> Result<DeviceThread, VmmError> {
        let stop =
            EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::io("creating the device-thread eventfd"))?;
        let stop_for_loop = stop.try_clone().map_err(VmmError::io("cloning an eventfd"))?;
        let mut manager: EventManager<Subscriber> =
            EventManager::new().map_err(|e| VmmError::Thread(format!("creating the event loop: {e:?}")))?;
        let done = Arc::new(AtomicBool::new(false));
        manager.add_subscriber(Arc::new(Mutex::new(StopSubscriber {
            evt: stop_for_loop,
            done: done.clone(),
        })));
        for s in subscribers {
            manager.add_subscriber(s);
        }
        let handle = std::thread::Builder::new()
            .name("sandbox-devices".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    while !done.load(Ordering::SeqCst) {
                        if let Err(e) = manager.run() {
                            return Err(format!("device event loop: {e:?}"));
                        }
                    }
                    Ok(())
                }))
                .unwrap_or_else(|_| Err("the device thread panicked".to_string()));
                if let Err(e) = &result {
                    on_failure(e.clone());
                }
                result
            })
            .map_err(VmmError::io("starting the device thread"))?;
        Ok(DeviceThread { stop, handle })
    }

    /// Stops the loop and waits for it.
    pub fn stop(self) -> Result<(), VmmError> {
        let _ = self.stop.write(1);
        match self.handle.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(VmmError::Thread(e)),
            Err(_) => Err(VmmError::Thread("the device thread panicked".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::Block;
    use std::os::fd::AsRawFd;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    #[test]
    fn the_loop_starts_wakes_for_a_queue_and_stops() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(512).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(Block::new(file, false, "x").unwrap(), mem, irq).unwrap();
        let evt = t.queue_evts()[0].try_clone().unwrap();
        let t = Arc::new(Mutex::new(t));
        let thread = DeviceThread::spawn(
            vec![Arc::new(Mutex::new(VirtioSubscriber::new(t.clone())))],
            |_| {},
        )
        .unwrap();
        evt.write(1).unwrap();
        // The device thread consumes the notification (the device is inactive, so no work).
        let readable = || {
            let mut p = libc::pollfd {
                fd: evt.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while readable() {
            assert!(
                std::time::Instant::now() < deadline,
                "device thread never consumed the notification"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        thread.stop().unwrap();
    }
}
