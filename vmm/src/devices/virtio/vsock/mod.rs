//! virtio-vsock (device id 19) in the VMM, Firecracker's design: the guest's AF_VSOCK streams
//! are carried to AF_UNIX sockets on the host.
//!
//! # The host side
//! One unix socket path per VM, [`crate::VsockConfig::uds_path`] (`U` below); the guest has
//! CID [`crate::VsockConfig::guest_cid`] (3), the host CID 2.
//! - **Host-initiated**: a host program connects to `U` and writes `CONNECT <port>\n` (decimal,
//!   at most [`HANDSHAKE_MAX`] bytes with the newline, within [`HANDSHAKE_TIMEOUT`]). The VMM
//!   sends the guest a connection REQUEST to that port from a host port of its own choosing
//!   (from 2^30 up); when the guest's listener answers, the VMM writes `OK <host_port>\n` and
//!   from then on the socket is the stream to the guest. If the guest refuses (RST), does not
//!   answer within [`CONNECT_TIMEOUT`], or the line is malformed, the VMM closes the socket
//!   without a word (the host reads EOF, or ECONNRESET if its bytes were left unread). Bytes
//!   written after the line wait for the connection.
//! - **Guest-initiated**: a guest connection to CID 2 port `P` is connected to the unix socket
//!   `U_P` (e.g. `/run/vm/vsock.sock_5000`); when nothing listens there the guest gets an RST
//!   (its `connect` fails with ECONNRESET).
//! - Either side's half-close passes through (`shutdown(SHUT_WR)` on the host socket reaches the
//!   guest as SHUTDOWN SEND and the guest reads EOF; the guest's reaches the host as EOF); when
//!   both directions are over the VMM resets the vsock connection and closes the unix socket.
//! - `U` is removed when the VM ends (see [`UdsCleanup`]); an existing `U` is refused at start.
//!
//! # Where the work runs
//! On the device thread only. The device keeps its own epoll set (the listener, a timerfd, a
//! wake-up eventfd and every host socket, edge-triggered) and hands that one fd to the event
//! loop as its backend fd. vCPU threads never read or write a socket: the one thing done where
//! the driver writes the status register is a driver reset, which closes them all.
//!
//! # Bounds, against a guest that misbehaves
//! Every header field is checked (see [`packet`]): a chain without a readable 44-byte header is
//! returned and dropped; a `len` over 64 KiB or past the chain resets that connection; a wrong
//! source CID is dropped, a wrong destination CID, type or op gets an RST. Memory per
//! connection is bounded by the credit this side advertises ([`connection::BUF_ALLOC`], 256
//! KiB), connections by [`MAX_CONNECTIONS`]; a guest exceeding its credit is reset. Host→guest
//! bytes are never queued in the VMM (they are read from the host socket only into a guest
//! receive buffer). Resets for packets without a connection queue up to [`STRAY_RST_LIMIT`];
//! then the transmit queue is left alone until the guest takes them (the same back-pressure
//! Firecracker applies), so a guest flooding bad packets without receiving only stalls itself.
//! Each wake-up handles at most [`TX_BATCH`] transmit chains and then reschedules itself.
//!
//! # Why not vhost-vsock
//! The host kernel could run the data path (`vhost_vsock.ko`; this host's L1 has it), with the
//! VMM only setting it up. It was not used because:
//! - **CIDs are host-global.** vhost-vsock gives every VM a CID unique on the whole host, so
//!   each sandbox would need a CID allocator shared by all VMMs (and a collision check), and
//!   guest-visible CIDs would differ per VM; here every guest is CID 3 and each VM's channel is
//!   just a file in its own sandbox directory, with no host-wide state.
//! - **Host access control is a file mode.** vhost's host end is an AF_VSOCK socket that any
//!   host process can reach by CID; here it is a unix socket whose permissions and location the
//!   sandbox controls.
//! - **The module**: `/dev/vhost-vsock` must be loaded and opened (root or a device ACL);
//!   the unix-socket design needs nothing from the host kernel beyond AF_UNIX.
//! - **Snapshots** (planned): live connections cannot survive a restore in either design (the
//!   host ends are gone; Firecracker sends the guest TRANSPORT_RESET and its vsock connections
//!   do not survive a snapshot), so vhost gains nothing there and costs more: its connection
//!   state sits in the host kernel, out of reach of the VMM's snapshot code, and the guest's
//!   CID is part of the snapshot, so two VMs restored from one snapshot would claim the same
//!   host-global CID (each needs a new one and a TRANSPORT_RESET that makes the guest re-read
//!   it). Here every copy keeps CID 3 and gets its own socket path.
//!
//! The cost is a copy through the VMM and a device-thread wake-up per burst: vhost would be
//! faster for bulk data. The channel is meant for a guest agent's control traffic, where that
//! does not matter, and the security argument (a smaller, per-VM, unprivileged host surface)
//! favours the VMM. The event queue is kept but unused: TRANSPORT_RESET belongs with restore.

pub mod connection;
pub mod packet;

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use super::{read_config_bytes, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::error::VmmError;
use connection::{pending, Connection, Next, State};
use packet::{op, Header, TxError, HDR_LEN, HOST_CID, TYPE_STREAM};

const QUEUE_SIZE: u16 = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;

/// Connections at once (host sockets waiting to say CONNECT included). With
/// [`connection::BUF_ALLOC`] that bounds what a guest can make the VMM hold at 32 MiB.
pub const MAX_CONNECTIONS: usize = 128;
/// Resets for packets without a connection waiting for the guest before the transmit queue is
/// left alone.
pub const STRAY_RST_LIMIT: usize = 256;
/// Transmit chains handled per wake-up before the device reschedules itself.
pub const TX_BATCH: usize = 256;
/// Receive buffers filled per wake-up.
const RX_BATCH: usize = 512;
/// How long a host-initiated connection waits for the guest's answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a host socket may take to send its `CONNECT <port>\n` line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `CONNECT <port>\n` line (`CONNECT 4294967295\n` is 19 bytes).
pub const HANDSHAKE_MAX: usize = 32;
/// The first host port given to host-initiated connections (as Firecracker does).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

const TOKEN_LISTENER: u64 = 0;
const TOKEN_TIMER: u64 = 1;
const TOKEN_WAKE: u64 = 2;
const FIRST_TOKEN: u64 = 3;

/// Counters for what was refused or dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VsockStats {
    pub connections_opened: u64,
    /// Transmit chains without a usable header.
    pub tx_bad_chains: u64,
    /// Guest packets dropped: a source CID other than the guest's.
    pub tx_dropped: u64,
    /// Resets sent to the guest.
    pub resets_sent: u64,
    /// Receive chains that were not device-writable or not in guest memory.
    pub rx_bad_chains: u64,
    /// Host sockets closed at once because [`MAX_CONNECTIONS`] were open.
    pub host_refused: u64,
}

/// A host socket that has not yet said `CONNECT <port>\n`.
struct Handshake {
    stream: UnixStream,
    deadline: Instant,
}

enum Slot {
    Handshake(Handshake),
    Conn(Connection),
}

/// Removes the device's unix socket when dropped — if it is still the one the device bound.
#[derive(Debug)]
pub struct UdsCleanup {
    path: PathBuf,
    id: (u64, u64),
}

impl UdsCleanup {
    fn new(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::symlink_metadata(path)?;
        Ok(UdsCleanup {
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UdsCleanup {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Timeouts, shortened by tests.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    handshake: Duration,
}

pub struct Vsock {
    cid: u64,
    config: [u8; 8],
    uds_path: PathBuf,
    listener: UnixListener,
    cleanup: Option<UdsCleanup>,
    epoll: Epoll,
    timer: TimerFd,
    timer_at: Option<Instant>,
    wake: EventFd,
    slots: HashMap<u64, Slot>,
    /// (host port, guest port) → token.
    keys: HashMap<(u32, u32), u64>,
    next_token: u64,
    next_local_port: u32,
    /// Tokens of connections with something for the guest, in order.
    rxq: VecDeque<u64>,
    /// Resets for packets that have (or no longer have) no connection.
    stray_rst: VecDeque<Header>,
    /// Transmit chains were left in the queue (batch limit or back-pressure).
    tx_pending: bool,
    scratch: Vec<u8>,
    tx_payload: Vec<u8>,
    timeouts: Timeouts,
    pub stats: VsockStats,
}

fn vsock_err(path: &Path, detail: String) -> VmmError {
    VmmError::Vsock {
        path: path.to_path_buf(),
        detail,
    }
}

impl Vsock {
    /// A vsock device for a guest with CID `guest_cid`, listening for host connections on
    /// `uds_path` (which must not exist yet).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Vsock, VmmError> {
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(vsock_err(
                uds_path,
                format!("guest CID {guest_cid} is reserved: use 3 or more (below 2^32 - 1)"),
            ));
        }
        if std::fs::symlink_metadata(uds_path).is_ok() {
            return Err(vsock_err(
                uds_path,
                "the path already exists (another VM's socket, or a stale one): remove it or pick another"
                    .into(),
            ));
        }
        let listener = UnixListener::bind(uds_path)
            .map_err(|e| vsock_err(uds_path, format!("cannot listen there: {e}")))?;
        // From here on the path is ours: removed again on any error below and when dropped.
        let cleanup = UdsCleanup::new(uds_path).map_err(|e| vsock_err(uds_path, e.to_string()))?;
        let io = |what: &'static str| move |e: std::io::Error| vsock_err(uds_path, format!("{what}: {e}"));
        listener.set_nonblocking(true).map_err(io("listener"))?;
        let epoll = Epoll::new().map_err(io("creating its epoll"))?;
        let timer = TimerFd::new()
            .map_err(|e| io("creating its timer")(std::io::Error::from_raw_os_error(e.errno())))?;
        // SAFETY: fcntl on a descriptor the TimerFd owns; only the status flags change.
        if unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
            return Err(io("timer")(std::io::Error::last_os_error()));
        }
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(io("creating its eventfd"))?;
        for (fd, token) in [
            (listener.as_raw_fd(), TOKEN_LISTENER),
            (timer.as_raw_fd(), TOKEN_TIMER),
            (wake.as_raw_fd(), TOKEN_WAKE),
        ] {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, token))
                .map_err(io("watching its descriptors"))?;
        }
        Ok(Vsock {
            cid: guest_cid,
            config: guest_cid.to_le_bytes(),
            uds_path: uds_path.to_path_buf(),
            listener,
            cleanup: Some(cleanup),
            epoll,
            timer,
            timer_at: None,
            wake,
            slots: HashMap::new(),
            keys: HashMap::new(),
            next_token: FIRST_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            rxq: VecDeque::new(),
            stray_rst: VecDeque::new(),
            tx_pending: false,
            scratch: Vec::with_capacity(packet::MAX_PAYLOAD as usize),
            tx_payload: Vec::new(),
            timeouts: Timeouts {
                connect: CONNECT_TIMEOUT,
                handshake: HANDSHAKE_TIMEOUT,
            },
            stats: VsockStats::default(),
        })
    }

    /// Hands the removal of the unix socket to the caller (the machine removes it when the VM
    /// ends even if the device outlives it); without this the device removes it when dropped.
    pub fn take_cleanup(&mut self) -> Option<UdsCleanup> {
        self.cleanup.take()
    }

    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Open connections (host sockets still handshaking included).
    pub fn connection_count(&self) -> usize {
        self.slots.len()
    }

    fn watch(&self, fd: RawFd, token: u64, events: EventSet, operation: ControlOperation) -> bool {
        self.epoll
            .ctl(operation, fd, EpollEvent::new(events, token))
            .is_ok()
    }

    fn conn_events() -> EventSet {
        EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED
    }

    // ---- host side ----

    /// Drains the device's epoll set.
    fn handle_host_events(&mut self) {
        let mut events = [EpollEvent::default(); 64];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(_) => return,
        };
        for ev in &events[..n] {
            let set = ev.event_set();
            match ev.data() {
                TOKEN_LISTENER => self.accept_host(),
                TOKEN_TIMER => {
                    let _ = self.timer.wait();
                    self.timer_at = None;
                    self.expire(Instant::now());
                }
                TOKEN_WAKE => {
                    let _ = self.wake.read();
                }
                token => self.host_socket_event(token, set),
            }
        }
    }

    fn accept_host(&mut self) {
        // The listener is level-triggered: what is left after this batch wakes the loop again.
        for _ in 0..16 {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(_) => return,
            };
            if self.slots.len() >= MAX_CONNECTIONS || stream.set_nonblocking(true).is_err() {
                self.stats.host_refused += 1;
                continue;
            }
            let token = self.new_token();
            let events = EventSet::IN | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
            if !self.watch(stream.as_raw_fd(), token, events, ControlOperation::Add) {
                continue;
            }
            let deadline = Instant::now() + self.timeouts.handshake;
            self.slots
                .insert(token, Slot::Handshake(Handshake { stream, deadline }));
            // Edge-triggered: the line may already be there.
            self.read_handshake(token);
        }
    }

    fn new_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn host_socket_event(&mut self, token: u64, set: EventSet) {
        match self.slots.get_mut(&token) {
            Some(Slot::Handshake(_)) => self.read_handshake(token),
            Some(Slot::Conn(conn)) => {
                // READ_HANG_UP is the host's half-close (read to EOF); HANG_UP its full close.
                conn.on_host_event(
                    set.intersects(EventSet::IN | EventSet::READ_HANG_UP),
                    set.intersects(EventSet::HANG_UP | EventSet::ERROR),
                    set.contains(EventSet::OUT),
                );
                self.settle(token);
            }
            None => {}
        }
    }

    /// Reads `CONNECT <port>\n` once it is all there (peeking, so bytes after it stay in the
    /// socket for the connection).
    fn read_handshake(&mut self, token: u64) {
        let Some(Slot::Handshake(hs)) = self.slots.get_mut(&token) else {
            return;
        };
        let mut buf = [0u8; HANDSHAKE_MAX];
        // SAFETY: recv into a stack buffer of the given length, on a descriptor we own.
        let n = unsafe {
            libc::recv(
                hs.stream.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) {
                return;
            }
            return self.kill(token, false);
        }
        let peeked = &buf[..n as usize];
        let Some(end) = peeked.iter().position(|&b| b == b'\n') else {
            if n == 0 || peeked.len() == HANDSHAKE_MAX {
                // EOF before a line, or a line too long to be CONNECT.
                self.kill(token, false);
            }
            return;
        };
        let port = parse_connect(&peeked[..end]);
        let mut line = vec![0u8; end + 1];
        let consumed = hs.stream.read_exact(&mut line).is_ok();
        let Some(port) = port.filter(|_| consumed) else {
            return self.kill(token, false);
        };
        let Some(Slot::Handshake(hs)) = self.slots.remove(&token) else {
            return;
        };
        let local_port = self.allocate_port(port);
        let mut conn = Connection::new(hs.stream, token, local_port, port, self.cid, State::Connecting);
        conn.pending = pending::REQUEST;
        conn.deadline = Some(Instant::now() + self.timeouts.connect);
        if !self.watch(
            conn.stream.as_raw_fd(),
            token,
            Self::conn_events(),
            ControlOperation::Modify,
        ) {
            return;
        }
        self.keys.insert((local_port, port), token);
        self.slots.insert(token, Slot::Conn(conn));
        self.stats.connections_opened += 1;
        self.settle(token);
    }

    fn allocate_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = if p == u32::MAX { FIRST_LOCAL_PORT } else { p + 1 };
            if !self.keys.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    /// Ends what timed out: handshakes that never said CONNECT, REQUESTs the guest never
    /// answered.
    fn expire(&mut self, now: Instant) {
        let due: Vec<(u64, bool)> = self
            .slots
            .iter()
            .filter_map(|(&t, s)| match s {
                Slot::Handshake(h) if h.deadline <= now => Some((t, false)),
                Slot::Conn(c) if c.deadline.is_some_and(|d| d <= now) => Some((t, true)),
                _ => None,
            })
            .collect();
        for (token, rst) in due {
            self.kill(token, rst);
        }
    }

    /// Arms the timer for the earliest deadline.
    fn rearm_timer(&mut self) {
        let earliest = self
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Handshake(h) => Some(h.deadline),
                Slot::Conn(c) => c.deadline,
            })
            .min();
        if earliest == self.timer_at {
            return;
        }
        self.timer_at = earliest;
        let _ = match earliest {
            Some(at) => {
                let d = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                self.timer.reset(d, None)
            }
            None => self.timer.clear(),
        };
    }

    /// Closes `token`'s host socket; for a connection the guest knows, queues an RST for it.
    fn kill(&mut self, token: u64, send_rst: bool) {
        let Some(slot) = self.slots.remove(&token) else {
            return;
        };
        if let Slot::Conn(conn) = slot {
            self.keys.remove(&(conn.local_port, conn.peer_port));
            if conn.queued {
                // Stale tokens would pile up while a guest takes nothing and hosts keep trying.
                self.rxq.retain(|&t| t != token);
            }
            if send_rst && conn.guest_knows {
                self.queue_rst(conn.header(op::RST));
            }
        }
        // Dropping the socket closes it, which also takes it out of the epoll set.
    }

    fn queue_rst(&mut self, h: Header) {
        // Past twice the limit (only reachable by kills, which TX back-pressure does not stop)
        // the guest would not take them anyway: drop rather than grow.
        if self.stray_rst.len() < 2 * STRAY_RST_LIMIT {
            self.stray_rst.push_back(h);
        }
    }

    /// After any change to a connection: close it if both directions are over, or queue it if
    /// it has something for the guest.
    fn settle(&mut self, token: u64) {
        let Some(Slot::Conn(conn)) = self.slots.get_mut(&token) else {
            return;
        };
        if conn.finished() {
            return self.kill(token, true);
        }
        if conn.wants_rx() && !conn.queued {
            conn.queued = true;
            self.rxq.push_back(token);
        }
    }

    // ---- guest → host ----

    /// Handles the guest's transmit chains; returns whether the used ring changed.
    fn process_tx(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(tx) = queues.get_mut(TX_QUEUE) else {
            return false;
        };
        let mut used = false;
        self.tx_pending = false;
        for handled in 0.. {
            if self.stray_rst.len() >= STRAY_RST_LIMIT {
                // Back-pressure: resume once the guest has taken the resets.
                self.tx_pending = true;
                break;
            }
            if handled == TX_BATCH {
                self.tx_pending = true;
                let _ = self.wake.write(1);
                break;
            }
            let Some(chain) = tx.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            let mut payload = std::mem::take(&mut self.tx_payload);
            match packet::read_tx(&descs, mem, &mut payload) {
                Ok(h) => self.guest_packet(&h, &payload),
                Err(TxError::BadChain) => self.stats.tx_bad_chains += 1,
                Err(TxError::BadPayload(h)) => self.guest_malformed(&h),
            }
            self.tx_payload = payload;
            if tx.add_used(mem, head, 0).is_err() {
                break;
            }
            used = true;
        }
        used
    }

    /// The RST answering guest packet `h`, from the address it was sent to.
    fn rst_for(&self, h: &Header) -> Header {
        Header {
            src_cid: h.dst_cid,
            dst_cid: self.cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            len: 0,
            kind: TYPE_STREAM,
            op: op::RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }

    /// A packet whose payload is not there: reset its connection (or answer it with an RST).
    fn guest_malformed(&mut self, h: &Header) {
        if h.src_cid != self.cid {
            self.stats.tx_dropped += 1;
            return;
        }
        match self.keys.get(&(h.dst_port, h.src_port)).copied() {
            Some(token) if h.dst_cid == HOST_CID => self.kill(token, true),
            _ => self.queue_rst(self.rst_for(h)),
        }
    }

    fn guest_packet(&mut self, h: &Header, payload: &[u8]) {
        if h.src_cid != self.cid {
            // Spoofed: nothing of ours to answer.
            self.stats.tx_dropped += 1;
            return;
        }
        let valid_op = (op::REQUEST..=op::CREDIT_REQUEST).contains(&h.op);
        if h.dst_cid != HOST_CID || h.kind != TYPE_STREAM || !valid_op {
            if h.op != op::RST {
                self.queue_rst(self.rst_for(h));
            }
            return;
        }
        let Some(token) = self.keys.get(&(h.dst_port, h.src_port)).copied() else {
            match h.op {
                op::REQUEST => self.guest_connect(h),
                op::RST => {}
                _ => self.queue_rst(self.rst_for(h)),
            }
            return;
        };
        let Some(Slot::Conn(conn)) = self.slots.get_mut(&token) else {
            return;
        };
        conn.update_peer_credit(h);
        let reset = match (conn.state, h.op) {
            (_, op::RST) => return self.kill(token, false),
            (State::Connecting, op::RESPONSE) => {
                conn.establish();
                false
            }
            (State::Established, op::RW) => !conn.guest_data(payload),
            (State::Established, op::CREDIT_UPDATE) => false,
            (State::Established, op::CREDIT_REQUEST) => {
                conn.pending |= pending::CREDIT_UPDATE;
                false
            }
            (State::Established, op::SHUTDOWN) => {
                conn.guest_shutdown(h.flags);
                false
            }
            // A REQUEST for a live connection, a RESPONSE nobody asked for, data before the
            // RESPONSE: the guest's state does not match ours.
            _ => true,
        };
        if reset {
            self.kill(token, true);
        } else {
            self.settle(token);
        }
    }

    /// A guest REQUEST to host port `dst_port`: connect `<uds_path>_<port>`.
    fn guest_connect(&mut self, h: &Header) {
        if self.slots.len() >= MAX_CONNECTIONS {
            return self.queue_rst(self.rst_for(h));
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", h.dst_port));
        let Some(stream) = connect_nonblocking(Path::new(&path)) else {
            return self.queue_rst(self.rst_for(h));
        };
        let token = self.new_token();
        if !self.watch(
            stream.as_raw_fd(),
            token,
            Self::conn_events(),
            ControlOperation::Add,
        ) {
            return self.queue_rst(self.rst_for(h));
        }
        let mut conn = Connection::new(
            stream,
            token,
            h.dst_port,
            h.src_port,
            self.cid,
            State::Established,
        );
        conn.update_peer_credit(h);
        conn.pending = pending::RESPONSE;
        conn.guest_knows = true;
        // The host may write before we look: edge-triggered readiness must not be lost.
        conn.host_readable = true;
        self.keys.insert((h.dst_port, h.src_port), token);
        self.slots.insert(token, Slot::Conn(conn));
        self.stats.connections_opened += 1;
        self.settle(token);
    }

    // ---- host → guest ----

    /// Fills guest receive buffers with what is waiting; returns whether the used ring changed.
    fn fill_rx(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(rx) = queues.get_mut(RX_QUEUE) else {
            return false;
        };
        let mut used = false;
        for _ in 0..RX_BATCH {
            if self.stray_rst.is_empty() && self.rxq.is_empty() {
                break;
            }
            let Some(chain) = rx.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            let capacity = match packet::rx_capacity(&descs, mem) {
                Some(c) if c >= HDR_LEN => c,
                _ => {
                    self.stats.rx_bad_chains += 1;
                    if rx.add_used(mem, head, 0).is_err() {
                        break;
                    }
                    used = true;
                    continue;
                }
            };
            let Some(h) = self.next_rx_packet(capacity - HDR_LEN) else {
                // Nothing after all (a socket had no data): the buffer stays the guest's.
                rx.go_to_previous_position();
                break;
            };
            let payload: &[u8] = if h.op == op::RW { &self.scratch } else { &[] };
            let len = packet::write_rx(&descs, mem, &h, payload).unwrap_or(0);
            if rx.add_used(mem, head, len).is_err() {
                break;
            }
            used = true;
        }
        used
    }

    fn next_rx_packet(&mut self, max_payload: usize) -> Option<Header> {
        if let Some(h) = self.stray_rst.pop_front() {
            self.stats.resets_sent += 1;
            return Some(h);
        }
        while let Some(token) = self.rxq.pop_front() {
            let Some(Slot::Conn(conn)) = self.slots.get_mut(&token) else {
                continue;
            };
            conn.queued = false;
            match conn.next_packet(max_payload, &mut self.scratch) {
                Next::Packet(h) => {
                    self.settle(token);
                    return Some(h);
                }
                Next::Nothing => self.settle(token),
                Next::Reset => {
                    self.kill(token, true);
                    if let Some(h) = self.stray_rst.pop_front() {
                        self.stats.resets_sent += 1;
                        return Some(h);
                    }
                }
            }
        }
        None
    }

    /// The work every entry point ends with: transmit chains left over, then receive buffers,
    /// then the timer.
    fn pump(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap, mut tx: bool) -> bool {
        let mut used = false;
        for _ in 0..4 {
            if tx {
                used |= self.process_tx(queues, mem);
            }
            used |= self.fill_rx(queues, mem);
            // Resets the guest just took may unblock the transmit queue.
            tx = self.tx_pending && self.stray_rst.len() < STRAY_RST_LIMIT;
            if !tx {
                break;
            }
        }
        self.rearm_timer();
        used
    }

    #[cfg(test)]
    fn set_timeouts(&mut self, connect: Duration, handshake: Duration) {
        self.timeouts = Timeouts { connect, handshake };
    }
}

/// Parses `CONNECT <port>` (the newline already cut off): decimal, no sign, fits a u32.
fn parse_connect(line: &[u8]) -> Option<u32> {
    let digits = line.strip_prefix(b"CONNECT ")?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Connects a non-blocking unix stream socket to `path` without ever waiting: a listener whose
/// backlog is full counts as refused.
fn connect_nonblocking(path: &Path) -> Option<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(path).ok()?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    connect(fd.as_raw_fd(), &addr).ok()?;
    Some(UnixStream::from(fd))
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        match index {
            RX_QUEUE => self.pump(queues, mem, self.tx_pending),
            TX_QUEUE => self.pump(queues, mem, true),
            // The event queue's buffers are kept for TRANSPORT_RESET, which nothing sends yet.
            _ => false,
        }
    }

    fn backend_fd(&self) -> Option<(RawFd, bool)> {
        Some((self.epoll.as_raw_fd(), true))
    }

    fn process_backend(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        self.handle_host_events();
        self.pump(queues, mem, self.tx_pending)
    }

    fn reset(&mut self) {
        // The driver starts over: every connection goes (their host sockets are closed).
        self.slots.clear();
        self.keys.clear();
        self.rxq.clear();
        self.stray_rst.clear();
        self.tx_pending = false;
        self.rearm_timer();
    }
}

#[cfg(test)]
mod tests;
