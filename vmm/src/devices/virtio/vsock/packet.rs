//! The virtio-vsock packet: the 44-byte little-endian `virtio_vsock_hdr` and its payload, read
//! from a guest transmit chain or written into a guest receive chain. Every guest-supplied field
//! is checked here or by the caller: descriptor directions, addresses, the header's length
//! against the chain's bytes and against [`MAX_PAYLOAD`].

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// `sizeof(struct virtio_vsock_hdr)`: the header is packed.
pub const HDR_LEN: usize = 44;
/// The largest payload one packet may carry (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`); a guest
/// header claiming more is malformed.
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// The host's well-known CID (`VMADDR_CID_HOST`).
pub const HOST_CID: u64 = 2;

/// `virtio_vsock_type`: the only socket type this device carries.
pub const TYPE_STREAM: u16 = 1;

/// `virtio_vsock_op` values.
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `virtio_vsock_shutdown` flags: the sender will receive no more (`RCV`) / send no more (`SEND`).
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// The packet header, host byte order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap_or([0; 2]));
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a transmit chain could not be taken as a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// No usable header: a device-writable or out-of-memory descriptor, or fewer than
    /// [`HDR_LEN`] bytes. Nothing can be answered; the chain is returned and dropped.
    BadChain,
    /// The header was read, but its payload is not there: `len` over [`MAX_PAYLOAD`] or more than
    /// the chain holds. The connection it names is reset.
    BadPayload(Header),
}

/// Reads a transmit chain: the header from its first [`HDR_LEN`] bytes (which may span
/// descriptors, as the spec allows) and, for `RW` packets, `len` payload bytes right after it
/// into `payload` (cleared first). Other ops' payload bytes, if any, are ignored.
pub fn read_tx(
    descs: &[Descriptor],
    mem: &GuestMemoryMmap,
    payload: &mut Vec<u8>,
) -> Result<Header, TxError> {
    payload.clear();
    let mut available = 0u64;
    for d in descs {
        if d.is_write_only() || !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
            return Err(TxError::BadChain);
        }
        available += u64::from(d.len());
    }
    if available < HDR_LEN as u64 {
        return Err(TxError::BadChain);
    }
    let mut hdr = [0u8; HDR_LEN];
    let mut reader = ChainCursor::new(descs);
    if reader.read(mem, &mut hdr).is_err() {
        return Err(TxError::BadChain);
    }
    let header = Header::from_bytes(&hdr);
    if header.op != op::RW {
        return Ok(header);
    }
    if header.len > MAX_PAYLOAD || u64::from(header.len) > available - HDR_LEN as u64 {
        return Err(TxError::BadPayload(header));
    }
    payload.resize(header.len as usize, 0);
    if reader.read(mem, payload).is_err() {
        payload.clear();
        return Err(TxError::BadPayload(header));
    }
    Ok(header)
}

/// How many bytes a receive chain can take: `None` when any descriptor is not device-writable or
/// lies outside guest memory.
pub fn rx_capacity(descs: &[Descriptor], mem: &GuestMemoryMmap) -> Option<usize> {
    let mut total = 0usize;
    for d in descs {
        if !d.is_write_only() || !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
            return None;
        }
        total = total.saturating_add(d.len() as usize);
    }
    Some(total)
}

/// Writes `header` and `payload` into a receive chain whose [`rx_capacity`] was checked to hold
/// them; returns the used length (header plus payload), `None` if a write failed.
pub fn write_rx(descs: &[Descriptor], mem: &GuestMemoryMmap, header: &Header, payload: &[u8]) -> Option<u32> {
    let mut cursor = ChainCursor::new(descs);
    cursor.write(mem, &header.to_bytes()).ok()?;
    cursor.write(mem, payload).ok()?;
    Some((HDR_LEN + payload.len()) as u32)
}

/// A position in a chain's bytes, across descriptor boundaries.
struct ChainCursor<'a> {
    descs: &'a [Descriptor],
    index: usize,
    offset: u32,
}

impl<'a> ChainCursor<'a> {
    fn new(descs: &'a [Descriptor]) -> Self {
        ChainCursor {
            descs,
            index: 0,
            offset: 0,
        }
    }

    /// Calls `f(address, range in buf)` for consecutive pieces covering `len` bytes.
    fn walk(
        &mut self,
        len: usize,
        mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> bool,
    ) -> Result<(), ()> {
        let mut done = 0usize;
        while done < len {
            let d = self.descs.get(self.index).ok_or(())?;
            let left_in_desc = (d.len() - self.offset) as usize;
            if left_in_desc == 0 {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            let n = left_in_desc.min(len - done);
            let addr = GuestAddress(d.addr().0.checked_add(u64::from(self.offset)).ok_or(())?);
            if !f(addr, done..done + n) {
                return Err(());
            }
            done += n;
            self.offset += n as u32;
        }
        Ok(())
    }

    fn read(&mut self, mem: &GuestMemoryMmap, buf: &mut [u8]) -> Result<(), ()> {
        self.walk(buf.len(), |addr, r| mem.read_slice(&mut buf[r], addr).is_ok())
    }

    fn write(&mut self, mem: &GuestMemoryMmap, buf: &[u8]) -> Result<(), ()> {
        self.walk(buf.len(), |addr, r| mem.write_slice(&buf[r], addr).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn desc(addr: u64, len: u32, write: bool) -> Descriptor {
        Descriptor::new(addr, len, if write { VRING_DESC_F_WRITE as u16 } else { 0 }, 0)
    }

    fn sample() -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234_5678,
            dst_port: 1024,
            len: 5,
            kind: TYPE_STREAM,
            op: op::RW,
            flags: 0,
            buf_alloc: 262_144,
            fwd_cnt: 77,
        }
    }

    #[test]
    fn the_header_round_trips_in_the_packed_little_endian_layout() {
        let h = sample();
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[20..24], &1024u32.to_le_bytes());
        assert_eq!(&b[30..32], &op::RW.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn a_header_split_over_descriptors_and_its_payload_are_read() {
        let m = mem();
        let b = sample().to_bytes();
        m.write_slice(&b[..10], GuestAddress(0x1000)).unwrap();
        m.write_slice(&b[10..], GuestAddress(0x2000)).unwrap();
        m.write_slice(b"hello", GuestAddress(0x2000 + 34)).unwrap();
        let descs = [desc(0x1000, 10, false), desc(0x2000, 34 + 5, false)];
        let mut payload = Vec::new();
        assert_eq!(read_tx(&descs, &m, &mut payload), Ok(sample()));
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn bad_chains_and_lying_lengths_are_refused() {
        let m = mem();
        let mut h = sample();
        let mut payload = Vec::new();
        m.write_slice(&h.to_bytes(), GuestAddress(0x1000)).unwrap();
        // Short header, writable descriptor, outside memory.
        for descs in [
            vec![desc(0x1000, 20, false)],
            vec![desc(0x1000, 44, true), desc(0x2000, 5, false)],
            vec![desc(0xff_fff0, 44, false)],
        ] {
            assert_eq!(read_tx(&descs, &m, &mut payload), Err(TxError::BadChain));
        }
        // len beyond the chain, len beyond the limit.
        h.len = 100;
        m.write_slice(&h.to_bytes(), GuestAddress(0x1000)).unwrap();
        let descs = [desc(0x1000, 44, false), desc(0x2000, 50, false)];
        assert_eq!(read_tx(&descs, &m, &mut payload), Err(TxError::BadPayload(h)));
        h.len = u32::MAX;
        m.write_slice(&h.to_bytes(), GuestAddress(0x1000)).unwrap();
        assert_eq!(read_tx(&descs, &m, &mut payload), Err(TxError::BadPayload(h)));
        // A control packet's len is not payload to read.
        h.op = op::REQUEST;
        m.write_slice(&h.to_bytes(), GuestAddress(0x1000)).unwrap();
        assert_eq!(read_tx(&descs[..1], &m, &mut payload), Ok(h));
        assert!(payload.is_empty());
    }

    #[test]
    fn receive_chains_must_be_writable_and_in_memory() {
        let m = mem();
        assert_eq!(
            rx_capacity(&[desc(0x1000, 44, true), desc(0x2000, 4096, true)], &m),
            Some(4140)
        );
        assert_eq!(rx_capacity(&[desc(0x1000, 44, false)], &m), None);
        assert_eq!(rx_capacity(&[desc(0x10_0000, 44, true)], &m), None);
        let descs = [desc(0x1000, 20, true), desc(0x2000, 4096, true)];
        let used = write_rx(&descs, &m, &sample(), b"hello").unwrap();
        assert_eq!(used, 49);
        let mut b = [0u8; HDR_LEN];
        m.read_slice(&mut b[..20], GuestAddress(0x1000)).unwrap();
        m.read_slice(&mut b[20..], GuestAddress(0x2000)).unwrap();
        assert_eq!(Header::from_bytes(&b), sample());
        let mut p = [0u8; 5];
        m.read_slice(&mut p, GuestAddress(0x2000 + 24)).unwrap();
        assert_eq!(&p, b"hello");
    }
}
