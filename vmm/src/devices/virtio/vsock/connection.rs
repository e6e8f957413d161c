//! One vsock stream between a guest port and a host unix socket: its state, both credit
//! accounts, the bytes held for a slow host reader, and the shutdown flags each side has given.
//!
//! Credit (virtio 1.2 §5.10.6.3): each side advertises `buf_alloc` (its receive buffer) and
//! `fwd_cnt` (bytes it has consumed) in every packet; a sender keeps the bytes it has sent
//! minus the peer's `fwd_cnt` within the peer's `buf_alloc`.
//! - Host → guest: bytes are read from the host socket only when a guest receive buffer is in
//!   hand and only up to the guest's free credit, so nothing is ever queued in the VMM for the
//!   guest and a guest that stops reading stops the host socket (its own buffer fills, and the
//!   host writer blocks).
//! - Guest → host: bytes go straight to the host socket; what it does not take waits in
//!   `tx_buf`, which the credit this side advertises ([`BUF_ALLOC`]) bounds. A guest that sends
//!   beyond it is reset. Credit updates go out as the host consumes (see
//!   [`CREDIT_UPDATE_THRESHOLD`]).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::packet::{op, Header, HOST_CID, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// The receive buffer each connection advertises to the guest: the most guest bytes the VMM
/// ever holds for one connection whose host reader is slow (Linux's default `buf_alloc` too).
pub const BUF_ALLOC: u32 = 256 * 1024;
/// A credit update goes to the guest once the host has consumed this many bytes since the
/// guest last heard the count, so the guest always believes at least half the buffer is free.
pub const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 2;

/// Control packets waiting for a guest receive buffer.
pub mod pending {
    pub const REQUEST: u8 = 1;
    pub const RESPONSE: u8 = 2;
    pub const CREDIT_UPDATE: u8 = 4;
    pub const CREDIT_REQUEST: u8 = 8;
    pub const SHUTDOWN: u8 = 16;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: the REQUEST is (to be) sent; waiting for the guest's RESPONSE or RST.
    Connecting,
    /// Data flows, subject to the shutdown flags.
    Established,
}

/// What the connection offers for one guest receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A packet; for `RW` its payload is in the scratch buffer.
    Packet(Header),
    /// Nothing to send now.
    Nothing,
    /// The host socket failed: reset the connection.
    Reset,
}

pub struct Connection {
    pub stream: UnixStream,
    pub token: u64,
    /// The host side's port (the one the guest sees as the peer's).
    pub local_port: u32,
    /// The guest side's port.
    pub peer_port: u32,
    pub guest_cid: u64,
    pub state: State,
    /// [`pending`] flags.
    pub pending: u8,
    /// The host socket may have bytes (or EOF) to read: edge-triggered readiness, cleared only
    /// when a read comes back short.
    pub host_readable: bool,
    /// In the device's queue of connections with something for the guest.
    pub queued: bool,
    /// The guest has seen a packet of this connection (so a reset must be sent to it).
    pub guest_knows: bool,
    /// When an unanswered REQUEST gives up.
    pub deadline: Option<Instant>,
    // Host → guest credit.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    sent: Wrapping<u32>,
    credit_requested: bool,
    // Guest → host.
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    /// `OK <port>\n` for a host-initiated connection, written before any guest byte.
    prelude: Vec<u8>,
    tx_buf: VecDeque<u8>,
    /// Shutdown flags the guest sent (RCV: it takes no more; SEND: it sends no more).
    pub peer_shut: u32,
    /// Shutdown flags sent (or queued) to the guest on the host's behalf.
    pub local_shut: u32,
    host_hup: bool,
    host_write_shut: bool,
}

impl Connection {
    pub fn new(
        stream: UnixStream,
        token: u64,
        local_port: u32,
        peer_port: u32,
        guest_cid: u64,
        state: State,
    ) -> Self {
        Connection {
            stream,
            token,
            local_port,
            peer_port,
            guest_cid,
            state,
            pending: 0,
            host_readable: false,
            queued: false,
            guest_knows: false,
            deadline: None,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            sent: Wrapping(0),
            credit_requested: false,
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            prelude: Vec::new(),
            tx_buf: VecDeque::new(),
            peer_shut: 0,
            local_shut: 0,
            host_hup: false,
            host_write_shut: false,
        }
    }

    /// A header from the host side of this connection, carrying this side's credit.
    pub fn header(&self, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            kind: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Takes the credit fields of a packet from the guest.
    pub fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
        if self.guest_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// How many more bytes the guest can take. A guest claiming to have consumed more than it
    /// was sent gets none (it can only stall itself).
    pub fn guest_credit(&self) -> u32 {
        let in_flight = (self.sent - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Guest bytes held for the host, not yet written to its socket.
    pub fn buffered(&self) -> usize {
        self.tx_buf.len()
    }

    fn reads_host(&self) -> bool {
        self.state == State::Established
            && self.peer_shut & SHUTDOWN_RCV == 0
            && self.local_shut & SHUTDOWN_SEND == 0
    }

    /// Whether the connection has something for a guest receive buffer right now.
    pub fn wants_rx(&self) -> bool {
        self.pending != 0
            || (self.host_readable
                && self.reads_host()
                && (self.guest_credit() > 0 || !self.credit_requested))
    }

    /// Both directions are over: the guest→host one when the guest said SEND and everything it
    /// sent reached the host (or the host cannot receive), the host→guest one when the host's
    /// EOF was passed on (or the guest takes no more).
    pub fn finished(&self) -> bool {
        let to_host_done =
            (self.peer_shut & SHUTDOWN_SEND != 0 && self.tx_buf.is_empty() && self.prelude.is_empty())
                || self.local_shut & SHUTDOWN_RCV != 0;
        let to_guest_done = self.local_shut & SHUTDOWN_SEND != 0 || self.peer_shut & SHUTDOWN_RCV != 0;
        self.state == State::Established && self.pending == 0 && to_host_done && to_guest_done
    }

    /// Host socket readiness (edge-triggered).
    pub fn on_host_event(&mut self, readable: bool, hangup: bool, writable: bool) {
        if readable || hangup {
            self.host_readable = true;
        }
        if hangup {
            self.host_hup = true;
            if self.peer_shut & SHUTDOWN_RCV != 0 && self.local_shut != SHUTDOWN_BOTH {
                // The guest takes nothing more, so nothing is read to reach the EOF: say it now.
                self.local_shut = SHUTDOWN_BOTH;
                self.pending |= pending::SHUTDOWN;
            }
        }
        if writable {
            self.flush();
        }
    }

    /// The guest's RESPONSE to a host-initiated connection: tell the host its port.
    pub fn establish(&mut self) {
        self.state = State::Established;
        self.deadline = None;
        self.prelude = format!("OK {}\n", self.local_port).into_bytes();
        // Bytes the host wrote after its CONNECT line wait in the socket.
        self.host_readable = true;
        self.flush();
    }

    /// Guest data for the host. Returns false when it breaks the credit this side gave (the
    /// connection must be reset).
    pub fn guest_data(&mut self, data: &[u8]) -> bool {
        if self.peer_shut & SHUTDOWN_SEND != 0 {
            return false;
        }
        if self.tx_buf.len() + data.len() > BUF_ALLOC as usize {
            return false;
        }
        if self.local_shut & SHUTDOWN_RCV != 0 {
            // The host cannot take it; count it consumed so the guest is never stuck on credit.
            self.forwarded(data.len());
            return true;
        }
        self.tx_buf.extend(data);
        self.flush();
        true
    }

    /// A SHUTDOWN from the guest.
    pub fn guest_shutdown(&mut self, flags: u32) {
        self.peer_shut |= flags & SHUTDOWN_BOTH;
        self.flush();
    }

    fn forwarded(&mut self, n: usize) {
        self.fwd_cnt += Wrapping(n as u32);
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.pending |= pending::CREDIT_UPDATE;
        }
    }

    /// Writes what is held for the host until its socket would block; once the guest has said
    /// SEND and all is written, half-closes the host socket so the host reads EOF.
    pub fn flush(&mut self) {
        while !self.prelude.is_empty() {
            match self.stream.write(&self.prelude) {
                Ok(n) if n > 0 => {
                    self.prelude.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => return self.host_cannot_receive(),
            }
        }
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(n) if n > 0 => {
                    self.tx_buf.drain(..n);
                    self.forwarded(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => return self.host_cannot_receive(),
            }
        }
        if self.tx_buf.capacity() > 64 * 1024 {
            self.tx_buf = VecDeque::new();
        }
        if self.peer_shut & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    /// Writing to the host failed (it closed or shut its reading side): drop what is held, and
    /// tell the guest the host receives no more.
    fn host_cannot_receive(&mut self) {
        let dropped = self.tx_buf.len();
        self.tx_buf.clear();
        self.prelude.clear();
        self.forwarded(dropped);
        if self.local_shut & SHUTDOWN_RCV == 0 {
            self.local_shut |= SHUTDOWN_RCV;
            self.pending |= pending::SHUTDOWN;
        }
    }

    /// The next packet for a guest receive buffer with room for `max_payload` bytes: control
    /// packets first, then host data (read now, straight for this buffer, within the guest's
    /// credit), or the host's EOF as a SHUTDOWN.
    pub fn next_packet(&mut self, max_payload: usize, scratch: &mut Vec<u8>) -> Next {
        scratch.clear();
        let control = [
            (pending::REQUEST, op::REQUEST),
            (pending::RESPONSE, op::RESPONSE),
            (pending::SHUTDOWN, op::SHUTDOWN),
            (pending::CREDIT_REQUEST, op::CREDIT_REQUEST),
            (pending::CREDIT_UPDATE, op::CREDIT_UPDATE),
        ];
        for (flag, code) in control {
            if self.pending & flag != 0 {
                self.pending &= !flag;
                let mut h = self.header(code);
                if code == op::SHUTDOWN {
                    h.flags = self.local_shut;
                }
                return Next::Packet(self.sent_packet(h));
            }
        }
        if !(self.host_readable && self.reads_host()) {
            return Next::Nothing;
        }
        let credit = self.guest_credit() as usize;
        if credit == 0 {
            if self.credit_requested {
                return Next::Nothing;
            }
            self.credit_requested = true;
            return Next::Packet(self.sent_packet(self.header(op::CREDIT_REQUEST)));
        }
        let want = max_payload.min(credit).min(super::packet::MAX_PAYLOAD as usize);
        if want == 0 {
            return Next::Nothing;
        }
        scratch.resize(want, 0);
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    scratch.clear();
                    self.host_readable = false;
                    self.local_shut |= SHUTDOWN_SEND;
                    if self.host_hup {
                        self.local_shut |= SHUTDOWN_RCV;
                    }
                    self.pending &= !pending::SHUTDOWN;
                    let mut h = self.header(op::SHUTDOWN);
                    h.flags = self.local_shut;
                    return Next::Packet(self.sent_packet(h));
                }
                Ok(n) => {
                    scratch.truncate(n);
                    if n < want {
                        self.host_readable = false;
                    }
                    self.sent += Wrapping(n as u32);
                    let mut h = self.header(op::RW);
                    h.len = n as u32;
                    return Next::Packet(self.sent_packet(h));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    scratch.clear();
                    self.host_readable = false;
                    return Next::Nothing;
                }
                Err(_) => {
                    scratch.clear();
                    return Next::Reset;
                }
            }
        }
    }

    /// Every packet carries this side's `fwd_cnt`, so it also serves as a credit update.
    fn sent_packet(&mut self, h: Header) -> Header {
        self.guest_knows = true;
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.pending &= !pending::CREDIT_UPDATE;
        h
    }
}
