//! virtio-net over a tap device (any fd that carries one Ethernet frame per read/write: the tap,
//! or a SOCK_SEQPACKET socketpair in tests). No offloads: each frame crosses with a zeroed 12-byte
//! virtio-net header on receive, and the header stripped on transmit.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap};

use super::{read_config_bytes, VirtioDevice, VIRTIO_F_VERSION_1};

/// The modern virtio-net header: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers.
pub const NET_HDR_LEN: usize = 12;
/// The largest frame taken from the tap (64 KiB plus an Ethernet header).
const MAX_FRAME: usize = 65_562;
const QUEUE_SIZE: u16 = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
/// Frames moved per wake-up before yielding to other devices.
const BATCH: usize = 64;

/// Counters for what could not be delivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

pub struct Net {
    tap: File,
    config: [u8; 6],
    /// A frame read from the tap that waits for the guest to post a receive buffer.
    pending_rx: Option<Vec<u8>>,
    rx_buf: Vec<u8>,
    pub stats: NetStats,
}

impl Net {
    /// A net device on `tap` (non-blocking) with the guest MAC address `mac`.
    pub fn new(tap: File, mac: [u8; 6]) -> Net {
        Net {
            tap,
            config: mac,
            pending_rx: None,
            rx_buf: vec![0u8; MAX_FRAME],
            stats: NetStats::default(),
        }
    }

    /// Copies `frame` behind a zeroed header into the next receive chain. `Ok(false)`: no buffer
    /// posted (try again later); `Err(())`: the chain was unusable and the frame is dropped.
    fn deliver(queue: &mut Queue, mem: &GuestMemoryMmap, frame: &[u8]) -> Result<bool, ()> {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            return Ok(false);
        };
        let head = chain.head_index();
        let descs: Vec<Descriptor> = chain.collect();
        let mut hdr = [0u8; NET_HDR_LEN];
        hdr[10] = 1; // num_buffers
        let mut src = hdr.iter().chain(frame.iter()).copied();
        let total = NET_HDR_LEN + frame.len();
        let mut written = 0usize;
        let mut ok = true;
        for d in &descs {
            if written == total {
                break;
            }
            if !d.is_write_only() || !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
                ok = false;
                break;
            }
            let n = (d.len() as usize).min(total - written);
            let chunk: Vec<u8> = src.by_ref().take(n).collect();
            if mem.write_slice(&chunk, d.addr()).is_err() {
                ok = false;
                break;
            }
            written += n;
        }
        if !ok || written < total {
            // Give the chain back with nothing in it; the frame is lost.
            let _ = queue.add_used(mem, head, 0);
            return Err(());
        }
        let _ = queue.add_used(mem, head, written as u32);
        Ok(true)
    }

    /// Moves frames from the tap (and any pending one) into receive buffers.
    fn receive(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(rx) = queues.get_mut(RX_QUEUE) else {
            return false;
        };
        let mut used = false;
        for _ in 0..BATCH {
            let frame = match self.pending_rx.take() {
                Some(f) => f,
                None => match self.tap.read(&mut self.rx_buf) {
                    Ok(0) => break,
                    Ok(n) => self.rx_buf[..n].to_vec(),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.stats.rx_dropped += 1;
                        break;
                    }
                },
            };
            match Self::deliver(rx, mem, &frame) {
                Ok(true) => {
                    used = true;
                    self.stats.rx_frames += 1;
                }
                Ok(false) => {
                    self.pending_rx = Some(frame);
                    break;
                }
                Err(()) => {
                    used = true;
                    self.stats.rx_dropped += 1;
                }
            }
        }
        used
    }

    /// Sends every frame the guest queued for transmission.
    fn transmit(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(tx) = queues.get_mut(TX_QUEUE) else {
            return false;
        };
        let mut used = false;
        while let Some(chain) = tx.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut frame = Vec::new();
            let mut ok = true;
            for d in chain {
                if d.is_write_only() || frame.len() + d.len() as usize > MAX_FRAME + NET_HDR_LEN {
                    ok = false;
                    break;
                }
                let start = frame.len();
                frame.resize(start + d.len() as usize, 0);
                if mem.read_slice(&mut frame[start..], d.addr()).is_err() {
                    ok = false;
                    break;
                }
            }
            if ok && frame.len() > NET_HDR_LEN && self.tap.write(&frame[NET_HDR_LEN..]).is_ok() {
                self.stats.tx_frames += 1;
            } else {
                self.stats.tx_dropped += 1;
            }
            if tx.add_used(mem, head, 0).is_err() {
                break;
            }
            used = true;
        }
        used
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MAC)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        match index {
            RX_QUEUE => self.receive(queues, mem),
            TX_QUEUE => self.transmit(queues, mem),
            _ => false,
        }
    }

    fn backend_fd(&self) -> Option<(RawFd, bool)> {
        // While a frame waits for a receive buffer, reading the tap would only drop frames.
        Some((self.tap.as_raw_fd(), self.pending_rx.is_none()))
    }

    fn process_backend(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        self.receive(queues, mem)
    }

    fn reset(&mut self) {
        self.pending_rx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::tests::{memory, push_chain, DATA};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    /// A SOCK_SEQPACKET pair: one end plays the tap for the device, the test holds the other.
    fn fake_tap() -> (File, File) {
        let (a, b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        (File::from(a), File::from(b))
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn transmitted_frames_reach_the_tap_without_the_header() {
        let (tap, mut peer) = fake_tap();
        let mut net = Net::new(tap, [2, 0, 0, 0, 0, 1]);
        let mem = memory();
        let rx = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
        let payload = frame(100, 1);
        // Header and frame split over two descriptors, as Linux does without offloads.
        mem.write_slice(&[0u8; NET_HDR_LEN], GuestAddress(DATA)).unwrap();
        mem.write_slice(&payload, GuestAddress(DATA + 0x1000)).unwrap();
        push_chain(
            &tx,
            0,
            &[(DATA, NET_HDR_LEN as u32, false), (DATA + 0x1000, 100, false)],
        );
        let mut queues: Vec<Queue> = vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()];
        assert!(net.process_queue(TX_QUEUE, &mut queues, &mem));
        let mut got = vec![0u8; 2000];
        let n = peer.read(&mut got).unwrap();
        assert_eq!(&got[..n], &payload[..]);
        assert_eq!(tx.used().idx().load(), 1);
        assert_eq!(net.stats.tx_frames, 1);
    }

    #[test]
    fn frames_from_the_tap_reach_posted_receive_buffers_with_a_header() {
        let (tap, mut peer) = fake_tap();
        let mut net = Net::new(tap, [2, 0, 0, 0, 0, 1]);
        let mem = memory();
        let rx = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
        let mut queues: Vec<Queue> = vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()];

        // A frame arrives before the guest posted any buffer: it waits, and the tap is paused.
        let first = frame(60, 7);
        peer.write_all(&first).unwrap();
        assert!(!net.process_backend(&mut queues, &mem));
        assert!(!net.backend_fd().unwrap().1, "tap paused while a frame waits");

        // The guest posts two buffers; the notification delivers the waiting frame.
        push_chain(&rx, 0, &[(DATA, 1526, true)]);
        push_chain(&rx, 1, &[(DATA + 0x1000, 1526, true)]);
        assert!(net.process_queue(RX_QUEUE, &mut queues, &mem));
        assert!(net.backend_fd().unwrap().1);
        let used = rx.used().ring().ref_at(0).unwrap().load();
        assert_eq!(used.len() as usize, NET_HDR_LEN + first.len());
        let mut got = vec![0u8; NET_HDR_LEN + first.len()];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got[10], 1, "num_buffers");
        assert_eq!(&got[NET_HDR_LEN..], &first[..]);

        // The next frame goes straight into the second buffer.
        let second = frame(1514, 9);
        peer.write_all(&second).unwrap();
        assert!(net.process_backend(&mut queues, &mem));
        let mut got = vec![0u8; second.len()];
        mem.read_slice(&mut got, GuestAddress(DATA + 0x1000 + NET_HDR_LEN as u64))
            .unwrap();
        assert_eq!(got, second);
        assert_eq!(net.stats.rx_frames, 2);
    }

    #[test]
    fn malformed_chains_drop_the_frame_and_keep_going() {
        let (tap, mut peer) = fake_tap();
        let mut net = Net::new(tap, [2, 0, 0, 0, 0, 1]);
        let mem = memory();
        let rx = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
        // Receive buffer too small, then one outside memory, then a read-only one.
        push_chain(&rx, 0, &[(DATA, 20, true)]);
        push_chain(&rx, 1, &[(0x7000_0000, 1526, true)]);
        push_chain(&rx, 2, &[(DATA, 1526, false)]);
        // Transmit chain with a device-writable descriptor.
        push_chain(&tx, 0, &[(DATA, 64, true)]);
        let mut queues: Vec<Queue> = vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()];
        for seed in 0..3 {
            peer.write_all(&frame(100, seed)).unwrap();
        }
        assert!(net.process_backend(&mut queues, &mem));
        assert_eq!(net.stats.rx_dropped, 3);
        assert_eq!(rx.used().idx().load(), 3, "every chain given back");
        assert!(net.process_queue(TX_QUEUE, &mut queues, &mem));
        assert_eq!(net.stats.tx_dropped, 1);
    }

    #[test]
    fn config_space_holds_the_mac() {
        let (tap, _peer) = fake_tap();
        let net = Net::new(tap, [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        let mut mac = [0u8; 6];
        net.read_config(0, &mut mac);
        assert_eq!(mac, [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        assert_ne!(net.features() & VIRTIO_F_VERSION_1, 0);
    }
}
