//! The device against a simulated guest driver (split rings in guest memory, no KVM) and real
//! unix sockets on the host side.

use super::connection::{BUF_ALLOC, CREDIT_UPDATE_THRESHOLD};
use super::packet::{op, Header, HDR_LEN, HOST_CID, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::*;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixListener;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

const GUEST_CID: u64 = 3;
const RING_SIZE: u16 = 256;
const RX_AREA: u64 = 0x10_0000;
const RX_SLOT: u64 = 0x2000;
const RX_DATA: u32 = 4096;
const TX_AREA: u64 = 0x40_0000;
const TX_SLOT: u64 = 0x1_1000;
const TX_SLOTS: u64 = 16;

/// One split ring as a guest driver sees it.
struct Ring {
    base: u64,
    size: u16,
    avail_idx: u16,
    last_used: u16,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
}

impl Ring {
    fn new(base: u64) -> Ring {
        Ring {
            base,
            size: RING_SIZE,
            avail_idx: 0,
            last_used: 0,
            free: (0..RING_SIZE).rev().collect(),
            chains: HashMap::new(),
        }
    }

    fn avail(&self) -> u64 {
        self.base + 16 * u64::from(self.size)
    }

    fn used(&self) -> u64 {
        (self.avail() + 6 + 2 * u64::from(self.size) + 3) & !3
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.base as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail() as u32), Some(0));
        q.set_used_ring_address(Some(self.used() as u32), Some(0));
        q.set_ready(true);
        q
    }

    /// Publishes a chain of (address, length, device-writable); returns its head.
    fn push(&mut self, mem: &GuestMemoryMmap, descs: &[(u64, u32, bool)]) -> u16 {
        let idx: Vec<u16> = (0..descs.len())
            .map(|_| self.free.pop().expect("ring full"))
            .collect();
        for (i, &(addr, len, write)) in descs.iter().enumerate() {
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            let next = if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
                idx[i + 1]
            } else {
                0
            };
            let at = GuestAddress(self.base + 16 * u64::from(idx[i]));
            mem.write_obj(addr.to_le(), at).unwrap();
            mem.write_obj(len.to_le(), GuestAddress(at.0 + 8)).unwrap();
            mem.write_obj(flags.to_le(), GuestAddress(at.0 + 12)).unwrap();
            mem.write_obj(next.to_le(), GuestAddress(at.0 + 14)).unwrap();
        }
        let head = idx[0];
        let slot = self.avail() + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx.to_le(), GuestAddress(self.avail() + 2))
            .unwrap();
        self.chains.insert(head, idx);
        head
    }

    /// Used entries since the last call: (head, length); their descriptors are free again.
    fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u16, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used() + 2)).unwrap();
        let mut out = Vec::new();
        while self.last_used != idx {
            let e = self.used() + 4 + 8 * u64::from(self.last_used % self.size);
            let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
            let head = id as u16;
            if let Some(descs) = self.chains.remove(&head) {
                self.free.extend(descs);
            }
            out.push((head, len));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }
}

/// The guest side: rings, the device, and what the guest advertises as its credit.
struct Guest {
    mem: GuestMemoryMmap,
    rx: Ring,
    tx: Ring,
    queues: Vec<Queue>,
    dev: Vsock,
    dir: tempfile::TempDir,
    tx_slot: u64,
    buf_alloc: u32,
    fwd_cnt: u32,
}

type Packet = (Header, Vec<u8>);

impl Guest {
    fn new() -> Guest {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dev = Vsock::new(GUEST_CID, &dir.path().join("v.sock")).unwrap();
        let rx = Ring::new(0);
        let tx = Ring::new(0x1_0000);
        let ev = Ring::new(0x2_0000);
        let queues = vec![rx.queue(), tx.queue(), ev.queue()];
        Guest {
            mem,
            rx,
            tx,
            queues,
            dev,
            dir,
            tx_slot: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: 0,
        }
    }

    fn uds(&self) -> PathBuf {
        self.dir.path().join("v.sock")
    }

    /// Posts up to `n` receive buffers (as many as the ring has room for), shaped as Linux 6.1
    /// posts them: the header, then 4 KiB.
    fn post_rx(&mut self, n: usize) {
        for _ in 0..n.min(self.rx.free.len() / 2) {
            let head = *self.rx.free.last().expect("rx ring full");
            let base = RX_AREA + u64::from(head) * RX_SLOT;
            self.rx.push(
                &self.mem,
                &[(base, HDR_LEN as u32, true), (base + 64, RX_DATA, true)],
            );
        }
        self.dev.process_queue(RX_QUEUE, &mut self.queues, &self.mem);
    }

    /// Packets the device placed in receive buffers since the last call.
    fn recv(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        for (head, len) in self.rx.take_used(&self.mem) {
            assert!(len as usize >= HDR_LEN, "short used length {len}");
            let base = RX_AREA + u64::from(head) * RX_SLOT;
            let mut hb = [0u8; HDR_LEN];
            self.mem.read_slice(&mut hb, GuestAddress(base)).unwrap();
            let h = Header::from_bytes(&hb);
            assert_eq!(
                len as usize,
                HDR_LEN + h.len as usize,
                "used length = header + len"
            );
            let mut payload = vec![0u8; h.len as usize];
            self.mem
                .read_slice(&mut payload, GuestAddress(base + 64))
                .unwrap();
            assert_eq!((h.dst_cid, h.kind), (GUEST_CID, TYPE_STREAM), "{h:?}");
            assert!(h.src_cid == HOST_CID || h.op == op::RST, "{h:?}");
            out.push((h, payload));
        }
        out
    }

    fn header(&self, op: u16, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: 0,
            kind: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Sends a raw chain of descriptors (the caller wrote the memory).
    fn send_chain(&mut self, descs: &[(u64, u32, bool)]) {
        self.tx.push(&self.mem, descs);
        self.dev.process_queue(TX_QUEUE, &mut self.queues, &self.mem);
        self.tx.take_used(&self.mem);
    }

    /// Sends a packet as Linux does: header and payload in two descriptors.
    fn send(&mut self, mut h: Header, payload: &[u8]) {
        if h.op == op::RW {
            h.len = payload.len() as u32;
        }
        let base = TX_AREA + (self.tx_slot % TX_SLOTS) * TX_SLOT;
        self.tx_slot += 1;
        self.mem.write_slice(&h.to_bytes(), GuestAddress(base)).unwrap();
        self.mem.write_slice(payload, GuestAddress(base + 64)).unwrap();
        if payload.is_empty() {
            self.send_chain(&[(base, HDR_LEN as u32, false)]);
        } else {
            self.send_chain(&[
                (base, HDR_LEN as u32, false),
                (base + 64, payload.len() as u32, false),
            ]);
        }
    }

    fn op(&mut self, op: u16, src_port: u32, dst_port: u32) {
        self.send(self.header(op, src_port, dst_port), &[]);
    }

    fn host_events(&mut self) {
        self.dev.process_backend(&mut self.queues, &self.mem);
    }
}

/// What the host socket reads next; empty for EOF (or a reset: the device closed the socket
/// with bytes it had not read, which Linux reports as ECONNRESET).
fn read_some(s: &mut UnixStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let n = match s.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
        r => r.unwrap(),
    };
    buf.truncate(n);
    buf
}

fn nothing_to_read(s: &mut UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = s.read(&mut [0u8; 64]);
    s.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn ops(packets: &[Packet]) -> Vec<u16> {
    packets.iter().map(|p| p.0.op).collect()
}

/// A host program connecting to guest port `port`; returns the socket and the REQUEST the
/// guest got.
fn host_connect(g: &mut Guest, port: u32) -> (UnixStream, Header) {
    let mut s = UnixStream::connect(g.uds()).unwrap();
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    g.host_events();
    let got = g.recv();
    assert_eq!(ops(&got), [op::REQUEST], "{got:?}");
    (s, got[0].0)
}

/// A host-initiated connection the guest accepted: the host socket (past `OK`), and the
/// (host port, guest port) pair.
fn established(g: &mut Guest, port: u32) -> (UnixStream, u32) {
    let (mut s, req) = host_connect(g, port);
    assert_eq!((req.dst_port, req.src_port), (port, req.src_port));
    g.op(op::RESPONSE, port, req.src_port);
    let ok = read_some(&mut s);
    assert_eq!(ok, format!("OK {}\n", req.src_port).as_bytes());
    (s, req.src_port)
}

#[test]
fn identifies_as_vsock_with_three_queues_and_the_guest_cid() {
    let g = Guest::new();
    assert_eq!(g.dev.device_type(), 19);
    assert_eq!(g.dev.queue_max_sizes().len(), 3);
    assert_eq!(g.dev.features(), VIRTIO_F_VERSION_1);
    let mut cid = [0u8; 8];
    g.dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), GUEST_CID);
    let mut word = [0u8; 4];
    g.dev.read_config(4, &mut word);
    assert_eq!(word, [0; 4], "upper half of the 64-bit CID");
}

#[test]
fn host_initiated_connection_carries_data_both_ways_and_closes() {
    let mut g = Guest::new();
    g.post_rx(8);
    let (mut s, req) = host_connect(&mut g, 1024);
    assert_eq!(req.src_port, FIRST_LOCAL_PORT);
    assert_eq!(req.buf_alloc, BUF_ALLOC);
    assert!(nothing_to_read(&mut s), "no OK before the guest answers");
    g.op(op::RESPONSE, 1024, req.src_port);
    assert_eq!(read_some(&mut s), b"OK 1073741824\n");

    s.write_all(b"ping").unwrap();
    g.host_events();
    let got = g.recv();
    assert_eq!(ops(&got), [op::RW]);
    assert_eq!(got[0].1, b"ping");
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (req.src_port, 1024));

    g.send(g.header(op::RW, 1024, req.src_port), b"pong");
    assert_eq!(read_some(&mut s), b"pong");

    // The host half-closes: the guest gets SHUTDOWN SEND, and can still send.
    s.shutdown(Shutdown::Write).unwrap();
    g.host_events();
    let got = g.recv();
    assert_eq!(ops(&got), [op::SHUTDOWN]);
    assert_eq!(got[0].0.flags, SHUTDOWN_SEND);
    g.send(g.header(op::RW, 1024, req.src_port), b"late");
    assert_eq!(read_some(&mut s), b"late");
    // The guest closes: both directions are over, so the device resets and closes.
    let mut h = g.header(op::SHUTDOWN, 1024, req.src_port);
    h.flags = SHUTDOWN_BOTH;
    g.send(h, &[]);
    g.post_rx(0);
    assert_eq!(ops(&g.recv()), [op::RST]);
    assert_eq!(read_some(&mut s), b"", "host reads EOF");
    assert_eq!(g.dev.connection_count(), 0);
}

#[test]
fn bytes_written_with_the_connect_line_reach_the_guest_after_ok() {
    let mut g = Guest::new();
    g.post_rx(8);
    let mut s = UnixStream::connect(g.uds()).unwrap();
    s.write_all(b"CONNECT 7\nearly bytes").unwrap();
    g.host_events();
    let req = g.recv()[0].0;
    g.op(op::RESPONSE, 7, req.src_port);
    let got = g.recv();
    assert_eq!(ops(&got), [op::RW]);
    assert_eq!(got[0].1, b"early bytes");
    assert_eq!(read_some(&mut s), b"OK 1073741824\n");
}

#[test]
fn guest_initiated_connection_reaches_the_port_socket() {
    let mut g = Guest::new();
    g.post_rx(8);
    let mut path = g.uds().into_os_string();
    path.push("_5000");
    let listener = UnixListener::bind(&path).unwrap();
    g.op(op::REQUEST, 40_000, 5000);
    let got = g.recv();
    assert_eq!(ops(&got), [op::RESPONSE]);
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (5000, 40_000));
    let (mut s, _) = listener.accept().unwrap();

    g.send(g.header(op::RW, 40_000, 5000), b"hello host");
    assert_eq!(read_some(&mut s), b"hello host");
    s.write_all(b"hello guest").unwrap();
    g.host_events();
    let got = g.recv();
    assert_eq!(got[0].1, b"hello guest");

    // The guest half-closes: the host reads EOF, and can still answer.
    let mut h = g.header(op::SHUTDOWN, 40_000, 5000);
    h.flags = SHUTDOWN_SEND;
    g.send(h, &[]);
    assert_eq!(read_some(&mut s), b"");
    s.write_all(b"bye").unwrap();
    g.host_events();
    assert_eq!(g.recv()[0].1, b"bye");
    // The host closes: EOF reaches the guest as SHUTDOWN, then both directions are over.
    drop(s);
    g.host_events();
    let got = g.recv();
    assert_eq!(ops(&got), [op::SHUTDOWN, op::RST], "{got:?}");
    assert_eq!(got[0].0.flags & SHUTDOWN_SEND, SHUTDOWN_SEND);
    assert_eq!(g.dev.connection_count(), 0);
}

#[test]
fn guest_reset_closes_the_host_socket() {
    let mut g = Guest::new();
    g.post_rx(8);
    let (mut s, port) = established(&mut g, 1024);
    g.op(op::RST, 1024, port);
    assert_eq!(read_some(&mut s), b"");
    assert_eq!(g.dev.connection_count(), 0);
    assert!(g.recv().is_empty(), "no answer to an RST");
}

#[test]
fn refused_ports_reset_both_ways() {
    let mut g = Guest::new();
    g.post_rx(8);
    // The guest refuses the host: the host socket is closed without OK.
    let (mut s, req) = host_connect(&mut g, 99);
    g.op(op::RST, 99, req.src_port);
    assert_eq!(read_some(&mut s), b"");
    assert_eq!(g.dev.connection_count(), 0);
    // Nobody listens at <uds>_6000: the guest's REQUEST gets an RST from that address.
    g.op(op::REQUEST, 41_000, 6000);
    let got = g.recv();
    assert_eq!(ops(&got), [op::RST]);
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (6000, 41_000));
    // A socket file nobody listens on (a dead VM's) is refused the same way.
    let mut path = g.uds().into_os_string();
    path.push("_6001");
    drop(UnixListener::bind(&path).unwrap());
    g.op(op::REQUEST, 41_001, 6001);
    assert_eq!(ops(&g.recv()), [op::RST]);
}

#[test]
fn bad_connect_lines_and_silent_hosts_are_closed() {
    let mut g = Guest::new();
    g.post_rx(8);
    g.dev
        .set_timeouts(Duration::from_millis(50), Duration::from_millis(50));
    for line in [
        &b"HELLO\n"[..],
        b"CONNECT\n",
        b"CONNECT -1\n",
        b"CONNECT 4294967296\n",
        b"CONNECT 12 \n",
        b"connect 12\n",
        &[b'9'; HANDSHAKE_MAX][..],
    ] {
        let mut s = UnixStream::connect(g.uds()).unwrap();
        s.write_all(line).unwrap();
        g.host_events();
        assert_eq!(read_some(&mut s), b"", "{:?}", String::from_utf8_lossy(line));
    }
    // Half a line, then silence: closed when the handshake times out.
    let mut s = UnixStream::connect(g.uds()).unwrap();
    s.write_all(b"CONNECT 1").unwrap();
    g.host_events();
    assert_eq!(g.dev.connection_count(), 1);
    std::thread::sleep(Duration::from_millis(80));
    g.host_events();
    assert_eq!(read_some(&mut s), b"");
    // A guest that never answers the REQUEST: the host is closed, the guest reset.
    let (mut s, req) = host_connect(&mut g, 1024);
    std::thread::sleep(Duration::from_millis(80));
    g.host_events();
    assert_eq!(read_some(&mut s), b"");
    let got = g.recv();
    assert_eq!(ops(&got), [op::RST]);
    assert_eq!(got[0].0.src_port, req.src_port);
    assert_eq!(g.dev.connection_count(), 0);
    assert!(g.recv().is_empty());
    // Without receive buffers, REQUESTs that time out leave nothing queued behind.
    let mut g = Guest::new();
    g.dev
        .set_timeouts(Duration::from_millis(50), Duration::from_millis(50));
    let mut hosts = Vec::new();
    for _ in 0..10 {
        let mut s = UnixStream::connect(g.uds()).unwrap();
        s.write_all(b"CONNECT 1024\n").unwrap();
        hosts.push(s);
    }
    g.host_events();
    assert_eq!(g.dev.rxq.len(), 10);
    std::thread::sleep(Duration::from_millis(80));
    g.host_events();
    assert_eq!(g.dev.connection_count(), 0);
    assert!(g.dev.rxq.is_empty() && g.dev.stray_rst.is_empty());
}

#[test]
fn host_to_guest_stops_at_the_guest_credit_and_resumes_on_update() {
    let mut g = Guest::new();
    g.post_rx(64);
    g.buf_alloc = 10_000;
    let (mut s, port) = established(&mut g, 1024);
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&data).unwrap();
    g.host_events();
    let got = g.recv();
    let rw: usize = got.iter().filter(|p| p.0.op == op::RW).map(|p| p.1.len()).sum();
    assert_eq!(rw, 10_000, "exactly the guest's buf_alloc");
    assert!(got.iter().all(|p| p.1.len() <= RX_DATA as usize));
    assert_eq!(
        got.last().unwrap().0.op,
        op::CREDIT_REQUEST,
        "asks once for credit"
    );
    g.host_events();
    g.post_rx(0);
    assert!(g.recv().is_empty(), "nothing more without credit");

    // The guest consumed it all: another 10 000 bytes.
    g.fwd_cnt = 10_000;
    g.op(op::CREDIT_UPDATE, 1024, port);
    let got2 = g.recv();
    let more: Vec<u8> = got2
        .iter()
        .filter(|p| p.0.op == op::RW)
        .flat_map(|p| p.1.clone())
        .collect();
    assert_eq!(more.len(), 10_000);
    let mut all: Vec<u8> = got.iter().flat_map(|p| p.1.clone()).collect();
    all.extend(more);
    assert_eq!(all, data[..20_000]);
}

#[test]
fn receive_buffers_run_out_and_refill_without_losing_bytes() {
    let mut g = Guest::new();
    g.post_rx(4);
    let (mut s, port) = established(&mut g, 1024);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 253) as u8).collect();
    s.write_all(&data).unwrap();
    g.host_events();
    let mut got: Vec<u8> = Vec::new();
    let mut rounds = 0;
    while got.len() < data.len() {
        for (h, p) in g.recv() {
            assert_eq!(h.op, op::RW);
            got.extend(p);
        }
        g.fwd_cnt = got.len() as u32;
        g.op(op::CREDIT_UPDATE, 1024, port);
        g.post_rx(4);
        rounds += 1;
        assert!(rounds < 100, "stalled at {} bytes", got.len());
    }
    assert_eq!(got, data);
}

/// Sends as much of `data` as the device's advertised credit allows; returns bytes sent.
fn send_within_credit(g: &mut Guest, port: u32, data: &[u8], sent: &mut usize, peer_fwd: u32) {
    loop {
        let credit = (BUF_ALLOC - (*sent as u32).wrapping_sub(peer_fwd)) as usize;
        let n = credit.min(data.len() - *sent).min(64 * 1024);
        if n == 0 {
            return;
        }
        g.send(g.header(op::RW, 1024, port), &data[*sent..*sent + n]);
        *sent += n;
    }
}

#[test]
fn guest_to_slow_host_is_held_within_the_advertised_buffer() {
    let mut g = Guest::new();
    g.post_rx(64);
    let (mut s, port) = established(&mut g, 1024);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let (mut sent, mut peer_fwd, mut got) = (0usize, 0u32, Vec::new());
    let mut credit_updates = 0;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    while got.len() < data.len() {
        send_within_credit(&mut g, port, &data, &mut sent, peer_fwd);
        assert!(
            g.dev.connection_count() == 1,
            "no reset for a guest within its credit"
        );
        let held = match g.dev.slots.values().next() {
            Some(Slot::Conn(c)) => c.buffered(),
            _ => 0,
        };
        assert!(held <= BUF_ALLOC as usize, "held {held}");
        // The host reads slowly: 48 KiB at a time.
        let mut buf = vec![0u8; 48 * 1024];
        let n = s.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        g.host_events();
        for (h, _) in g.recv() {
            assert_eq!(h.op, op::CREDIT_UPDATE);
            credit_updates += 1;
            assert!(h.fwd_cnt.wrapping_sub(peer_fwd) >= CREDIT_UPDATE_THRESHOLD || h.fwd_cnt == sent as u32);
            peer_fwd = h.fwd_cnt;
        }
        g.post_rx(0);
    }
    assert_eq!(got, data);
    assert!(credit_updates >= 8, "{credit_updates} credit updates");
}

#[test]
fn a_guest_sending_past_its_credit_is_reset() {
    let mut g = Guest::new();
    g.post_rx(8);
    let (mut s, port) = established(&mut g, 1024);
    let chunk = vec![7u8; 64 * 1024];
    // The host never reads: the socket fills, then the device's buffer, then it resets.
    let mut sent = 0usize;
    for _ in 0..64 {
        g.send(g.header(op::RW, 1024, port), &chunk);
        sent += chunk.len();
        if g.dev.connection_count() == 0 {
            break;
        }
    }
    assert_eq!(g.dev.connection_count(), 0, "reset after {sent} bytes");
    let got = ops(&g.recv());
    assert_eq!(got.last(), Some(&op::RST), "{got:?}");
    assert!(
        got[..got.len() - 1].iter().all(|&o| o == op::CREDIT_UPDATE),
        "{got:?}"
    );
    // What the host got is a prefix of what was sent (at most the socket's capacity).
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut all).unwrap();
    assert!(all.len() < sent && all.iter().all(|&b| b == 7));
}

#[test]
fn guest_shutdown_send_reaches_the_host_after_all_held_bytes() {
    let mut g = Guest::new();
    g.post_rx(8);
    let (mut s, port) = established(&mut g, 1024);
    let data: Vec<u8> = (0..BUF_ALLOC).map(|i| (i % 199) as u8).collect();
    g.send(g.header(op::RW, 1024, port), &data[..65_536]);
    g.send(g.header(op::RW, 1024, port), &data[65_536..131_072]);
    g.send(g.header(op::RW, 1024, port), &data[131_072..196_608]);
    g.send(g.header(op::RW, 1024, port), &data[196_608..]);
    let mut h = g.header(op::SHUTDOWN, 1024, port);
    h.flags = SHUTDOWN_SEND;
    g.send(h, &[]);
    // The host reads it all, then EOF (the half-close waited for the held bytes).
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        g.host_events();
    }
    assert_eq!(got, data);
    // The host still talks to the guest; the guest said it would not receive: both over.
    let mut h = g.header(op::SHUTDOWN, 1024, port);
    h.flags = SHUTDOWN_RCV;
    g.recv();
    g.send(h, &[]);
    assert_eq!(ops(&g.recv()), [op::RST]);
    assert_eq!(g.dev.connection_count(), 0);
}

#[test]
fn a_host_that_closes_its_reading_side_is_reported_to_the_guest() {
    let mut g = Guest::new();
    g.post_rx(8);
    let (s, port) = established(&mut g, 1024);
    drop(s);
    g.host_events();
    let got = g.recv();
    assert_eq!(ops(&got), [op::SHUTDOWN, op::RST]);
    assert_eq!(got[0].0.flags, SHUTDOWN_BOTH);
    // Late guest data for the closed connection is answered with an RST, nothing else.
    g.send(g.header(op::RW, 1024, port), b"late");
    assert_eq!(ops(&g.recv()), [op::RST]);
}

#[test]
fn malformed_chains_and_headers_never_panic() {
    let mut g = Guest::new();
    g.post_rx(32);
    let (mut s, port) = established(&mut g, 1024);
    let base = TX_AREA + 15 * TX_SLOT;
    let good = g.header(op::RW, 1024, port).to_bytes();
    g.mem.write_slice(&good, GuestAddress(base)).unwrap();
    // Chains without a usable header: dropped, counted.
    let bad_chains: Vec<Vec<(u64, u32, bool)>> = vec![
        vec![(base, 20, false)],
        vec![(base, 44, true)],
        vec![(base, 44, false), (base + 64, 4, true)],
        vec![(0x7fff_0000, 44, false)],
        vec![(u64::MAX - 10, 44, false)],
        vec![(base, 0, false)],
    ];
    for chain in &bad_chains {
        g.send_chain(chain);
    }
    assert_eq!(g.dev.stats.tx_bad_chains, bad_chains.len() as u64);
    assert_eq!(g.dev.connection_count(), 1);
    assert!(nothing_to_read(&mut s));

    // Headers that lie: reset the connection they name, or answer with an RST.
    let mut h = g.header(op::RW, 1024, port);
    h.len = 100;
    g.mem.write_slice(&h.to_bytes(), GuestAddress(base)).unwrap();
    g.send_chain(&[(base, 44, false), (base + 64, 10, false)]);
    assert_eq!(
        g.dev.connection_count(),
        0,
        "len past the chain resets the connection"
    );
    assert_eq!(ops(&g.recv()), [op::RST]);
    assert_eq!(read_some(&mut s), b"");

    let mut cases: Vec<(&str, Header, bool)> = Vec::new();
    let mut h = g.header(op::RW, 1, 2);
    h.len = u32::MAX;
    cases.push(("huge len", h, true));
    let mut h = g.header(op::REQUEST, 1, 2);
    h.src_cid = 7;
    cases.push(("spoofed source cid", h, false));
    let mut h = g.header(op::REQUEST, 1, 2);
    h.dst_cid = 9;
    cases.push(("other destination cid (answered from that cid)", h, true));
    let mut h = g.header(op::REQUEST, 1, 2);
    h.kind = 2;
    cases.push(("seqpacket", h, true));
    cases.push(("op 0", g.header(0, 1, 2), true));
    cases.push(("op 99", g.header(99, 1, 2), true));
    cases.push(("RW for no connection", g.header(op::RW, 1, 2), true));
    cases.push(("RESPONSE for no connection", g.header(op::RESPONSE, 1, 2), true));
    cases.push(("RST for no connection", g.header(op::RST, 1, 2), false));
    let mut h = g.header(op::RST, 1, 2);
    h.dst_cid = 9;
    cases.push(("RST to another cid", h, false));
    for (name, h, answered) in cases {
        g.mem.write_slice(&h.to_bytes(), GuestAddress(base)).unwrap();
        g.send_chain(&[(base, 44, false), (base + 64, 16, false)]);
        let got = g.recv();
        if answered {
            assert_eq!(ops(&got), [op::RST], "{name}");
            assert_eq!(
                (got[0].0.src_port, got[0].0.dst_port),
                (h.dst_port, h.src_port),
                "{name}"
            );
            assert_eq!(got[0].0.src_cid, h.dst_cid, "{name}");
        } else {
            assert!(got.is_empty(), "{name}: {got:?}");
        }
    }
    assert_eq!(g.dev.stats.tx_dropped, 1);
    assert_eq!(g.dev.connection_count(), 0);
}

#[test]
fn unusable_receive_buffers_are_returned_and_the_packet_waits() {
    let mut g = Guest::new();
    g.op(op::REQUEST, 40_000, 5000); // refused: an RST waits for a buffer
    let base = RX_AREA + 200 * RX_SLOT;
    g.rx.push(&g.mem, &[(base, 44, false)]);
    g.rx.push(&g.mem, &[(base, 20, true)]);
    g.rx.push(&g.mem, &[(0x7fff_0000, 4140, true)]);
    g.dev.process_queue(RX_QUEUE, &mut g.queues, &g.mem);
    let used = g.rx.take_used(&g.mem);
    assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), [0, 0, 0]);
    assert_eq!(g.dev.stats.rx_bad_chains, 3);
    g.post_rx(1);
    assert_eq!(ops(&g.recv()), [op::RST]);
}

#[test]
fn a_descriptor_loop_in_either_queue_does_not_hang() {
    let mut g = Guest::new();
    // Two descriptors pointing at each other, in the transmit ring.
    let at = |i: u64| GuestAddress(0x1_0000 + 16 * i);
    for (i, next) in [(0u64, 1u16), (1, 0)] {
        g.mem.write_obj(TX_AREA, at(i)).unwrap();
        g.mem.write_obj(44u32, GuestAddress(at(i).0 + 8)).unwrap();
        g.mem
            .write_obj(VRING_DESC_F_NEXT as u16, GuestAddress(at(i).0 + 12))
            .unwrap();
        g.mem.write_obj(next, GuestAddress(at(i).0 + 14)).unwrap();
    }
    let avail = g.tx.avail();
    g.mem.write_obj(0u16, GuestAddress(avail + 4)).unwrap();
    g.mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap();
    g.dev.process_queue(TX_QUEUE, &mut g.queues, &g.mem);
    // And an avail index far ahead of what was posted.
    g.mem.write_obj(0x7fffu16, GuestAddress(avail + 2)).unwrap();
    g.dev.process_queue(TX_QUEUE, &mut g.queues, &g.mem);
    g.dev.process_backend(&mut g.queues, &g.mem);
}

#[test]
fn random_garbage_from_the_guest_never_panics() {
    let mut g = Guest::new();
    g.post_rx(128);
    let mut path = g.uds().into_os_string();
    path.push("_5");
    let _listener = UnixListener::bind(&path).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = TX_AREA;
    for i in 0..3000 {
        let r = rand();
        let h = Header {
            src_cid: if r & 7 == 0 { r >> 60 } else { GUEST_CID },
            dst_cid: if r & 0x38 == 0 { r >> 58 } else { HOST_CID },
            src_port: (rand() % 4) as u32,
            dst_port: if r & 0x40 == 0 { 5 } else { (rand() % 8) as u32 },
            len: match rand() % 4 {
                0 => rand() as u32,
                1 => (rand() % 200) as u32,
                _ => (rand() % 70_000) as u32,
            },
            kind: if r & 0x180 == 0 {
                (rand() % 4) as u16
            } else {
                TYPE_STREAM
            },
            op: (rand() % 9) as u16,
            flags: rand() as u32,
            buf_alloc: rand() as u32,
            fwd_cnt: rand() as u32,
        };
        g.mem.write_slice(&h.to_bytes(), GuestAddress(base)).unwrap();
        let split = (rand() % 50) as u32;
        let data_len = (rand() % 70_000) as u32;
        let write_flag = rand() % 16 == 0;
        g.send_chain(&[(base, split, false), (base + 64, data_len, write_flag)]);
        if i % 7 == 0 {
            let free = g.rx.free.len() / 2;
            g.post_rx(free.min(16));
            g.recv();
        }
        if i % 11 == 0 {
            g.host_events();
        }
        assert!(g.dev.connection_count() <= MAX_CONNECTIONS);
    }
}

#[test]
fn many_connections_up_to_the_limit_then_refusals() {
    let mut g = Guest::new();
    g.post_rx(200);
    let mut socks = Vec::new();
    for i in 0..MAX_CONNECTIONS - 1 {
        g.post_rx(1);
        let (s, port) = established(&mut g, 2000 + i as u32);
        socks.push((s, port, 2000 + i as u32));
    }
    // One guest-initiated connection fills the table.
    let mut path = g.uds().into_os_string();
    path.push("_5000");
    let _listener = UnixListener::bind(&path).unwrap();
    g.op(op::REQUEST, 40_000, 5000);
    assert_eq!(ops(&g.recv()), [op::RESPONSE]);
    assert_eq!(g.dev.connection_count(), MAX_CONNECTIONS);
    // Past the limit: a host socket is closed at once, a guest REQUEST reset.
    let mut extra = UnixStream::connect(g.uds()).unwrap();
    g.host_events();
    extra.write_all(b"CONNECT 1\n").ok();
    assert_eq!(read_some(&mut extra), b"");
    assert_eq!(g.dev.stats.host_refused, 1);
    g.op(op::REQUEST, 40_001, 5000);
    assert_eq!(ops(&g.recv()), [op::RST]);
    // Every connection still carries its own bytes.
    for (s, _, guest_port) in socks.iter_mut() {
        s.write_all(&guest_port.to_le_bytes()).unwrap();
    }
    let mut seen = 0;
    loop {
        // The event loop calls again while the device's epoll has events left (64 a call).
        g.host_events();
        let got = g.recv();
        if got.is_empty() {
            break;
        }
        for (h, p) in got {
            assert_eq!(h.op, op::RW);
            assert_eq!(p, h.dst_port.to_le_bytes());
            seen += 1;
        }
        g.post_rx(100);
    }
    assert_eq!(seen, MAX_CONNECTIONS - 1);
    for (s, port, guest_port) in socks.iter_mut() {
        g.send(g.header(op::RW, *guest_port, *port), b"x");
        assert_eq!(read_some(s), b"x");
    }
}

#[test]
fn a_guest_flooding_resets_without_receiving_only_stalls_its_transmit_queue() {
    let mut g = Guest::new();
    let base = TX_AREA;
    let mut h = g.header(op::REQUEST, 1, 2);
    h.dst_cid = 9;
    g.mem.write_slice(&h.to_bytes(), GuestAddress(base)).unwrap();
    for _ in 0..STRAY_RST_LIMIT {
        g.tx.push(&g.mem, &[(base, 44, false)]);
    }
    g.dev.process_queue(TX_QUEUE, &mut g.queues, &g.mem);
    assert_eq!(g.tx.take_used(&g.mem).len(), STRAY_RST_LIMIT);
    // No receive buffers: the next packets stay in the transmit ring.
    for _ in 0..100 {
        g.tx.push(&g.mem, &[(base, 44, false)]);
    }
    g.dev.process_queue(TX_QUEUE, &mut g.queues, &g.mem);
    assert!(g.tx.take_used(&g.mem).is_empty(), "stalled at the limit");
    assert_eq!(g.dev.stray_rst.len(), STRAY_RST_LIMIT);
    // Receive buffers arrive: the resets go out and the rest of the ring is handled.
    let (mut resets, mut handled) = (0, 0);
    for _ in 0..10 {
        g.post_rx(64);
        resets += g.recv().len();
        handled += g.tx.take_used(&g.mem).len();
    }
    assert_eq!(resets, STRAY_RST_LIMIT + 100);
    assert_eq!(handled, 100);
}

#[test]
fn a_driver_reset_closes_every_connection() {
    let mut g = Guest::new();
    g.post_rx(8);
    let (mut s, _) = established(&mut g, 1024);
    g.dev.reset();
    assert_eq!(read_some(&mut s), b"");
    assert_eq!(g.dev.connection_count(), 0);
    // The listener still works after the reset.
    let _ = UnixStream::connect(g.uds()).unwrap();
}

#[test]
fn the_socket_path_is_refused_if_present_and_removed_with_the_device() {
    let g = Guest::new();
    let path = g.uds();
    assert!(path.exists());
    let err = Vsock::new(GUEST_CID, &path).err().unwrap();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(Vsock::new(2, &g.dir.path().join("other.sock")).is_err());
    assert!(!g.dir.path().join("other.sock").exists());
    let dir = g.dir.path().to_path_buf();
    let Guest { dev, dir: keep, .. } = g;
    drop(dev);
    assert!(!path.exists(), "removed when the device goes");
    // Handed to the machine instead: removed when that guard goes.
    let mut dev = Vsock::new(GUEST_CID, &dir.join("v.sock")).unwrap();
    let guard = dev.take_cleanup().unwrap();
    drop(dev);
    assert!(dir.join("v.sock").exists());
    drop(guard);
    assert!(!dir.join("v.sock").exists());
    drop(keep);
}

#[test]
fn the_backend_fd_is_one_epoll_that_becomes_readable_for_host_events() {
    let g = Guest::new();
    let (fd, want) = g.dev.backend_fd().unwrap();
    assert!(want);
    let poll = |fd| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    };
    assert!(!poll(fd));
    let _s = UnixStream::connect(g.uds()).unwrap();
    assert!(poll(fd));
}
