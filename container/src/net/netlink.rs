//! A minimal rtnetlink client: one `NETLINK_ROUTE` socket, requests that wait for the kernel's
//! acknowledgement, dumps, and the byte layouts of the messages `--net host` needs (links,
//! addresses, routes). Message layouts follow rtnetlink(7) and <linux/if_link.h>.

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use std::os::fd::{AsRawFd, OwnedFd};

pub(super) const RTM_NEWLINK: u16 = 16;
pub(super) const RTM_DELLINK: u16 = 17;
pub(super) const RTM_GETLINK: u16 = 18;
pub(super) const RTM_NEWADDR: u16 = 20;
pub(super) const RTM_DELADDR: u16 = 21;
pub(super) const RTM_GETADDR: u16 = 22;
pub(super) const RTM_GETROUTE: u16 = 26;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;

pub(super) const IFLA_IFNAME: u16 = 3;
pub(super) const IFLA_LINKINFO: u16 = 18;
pub(super) const IFLA_NET_NS_PID: u16 = 19;
pub(super) const IFLA_IFALIAS: u16 = 20;
pub(super) const IFLA_INFO_KIND: u16 = 1;
pub(super) const IFLA_INFO_DATA: u16 = 2;
pub(super) const VETH_INFO_PEER: u16 = 1;
pub(super) const IFA_ADDRESS: u16 = 1;
pub(super) const IFA_LOCAL: u16 = 2;
pub(super) const RTA_DST: u16 = 1;
pub(super) const IFF_UP: u32 = 0x1;

const AF_UNSPEC: u8 = 0;
pub(super) const AF_INET: u8 = 2;
const HEADER_LEN: usize = 16;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `struct ifinfomsg`.
pub(super) fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = AF_UNSPEC;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// `struct ifaddrmsg` for IPv4 (scope universe).
pub(super) fn ifaddrmsg(prefix_len: u8, index: u32) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[0] = AF_INET;
    m[1] = prefix_len;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m
}

/// `struct rtmsg` selecting IPv4 routes.
pub(super) fn rtmsg() -> [u8; 12] {
    let mut m = [0u8; 12];
    m[0] = AF_INET;
    m
}

/// The body of a netlink message: a fixed header struct followed by attributes.
#[derive(Default)]
pub(super) struct Body {
    buf: Vec<u8>,
}

impl Body {
    pub(super) fn new(fixed: &[u8]) -> Body {
        Body { buf: fixed.to_vec() }
    }

    fn pad(&mut self) {
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    pub(super) fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Body {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub(super) fn attr_str(&mut self, ty: u16, s: &str) -> &mut Body {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(ty, &data)
    }

    /// Appends raw bytes (a fixed struct inside a nested attribute).
    pub(super) fn raw(&mut self, data: &[u8]) -> &mut Body {
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// Opens a nested attribute; close it with [`Body::end_nest`].
    pub(super) fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        start
    }

    pub(super) fn end_nest(&mut self, start: usize) -> &mut Body {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
}

/// Iterates the attributes in `data`: `(type, payload)`.
pub(super) fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        Some((ty, payload))
    })
}

/// A string attribute's value without its NUL.
pub(super) fn attr_string(payload: &[u8]) -> String {
    let end = payload.iter().position(|&b| b == 0).unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// One `NETLINK_ROUTE` socket talking to the kernel.
pub(super) struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub(super) fn open() -> Result<Socket, Errno> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Socket { fd, seq: 0 })
    }

    fn send(&mut self, ty: u16, flags: u16, body: &Body) -> Result<u32, Errno> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(HEADER_LEN + body.buf.len());
        msg.extend_from_slice(&((HEADER_LEN + body.buf.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body.buf);
        sendto(
            self.fd.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        Ok(self.seq)
    }

    /// Sends a request and waits for the kernel's acknowledgement.
    pub(super) fn request(&mut self, ty: u16, flags: u16, body: &Body) -> Result<(), Errno> {
        let seq = self.send(ty, flags | NLM_F_ACK, body)?;
        self.receive(seq, |_, _| {})
    }

    /// Sends a dump request and returns every reply message's `(type, body)`.
    pub(super) fn dump(&mut self, ty: u16, body: &Body) -> Result<Vec<(u16, Vec<u8>)>, Errno> {
        let seq = self.send(ty, NLM_F_DUMP, body)?;
        let mut replies = Vec::new();
        self.receive(seq, |ty, body| replies.push((ty, body.to_vec())))?;
        Ok(replies)
    }

    /// Reads replies to `seq` until an acknowledgement, an error or the end of a dump, handing
    /// each data message to `each`.
    fn receive(&mut self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> Result<(), Errno> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                r => r?,
            };
            let mut data = &buf[..n];
            while data.len() >= HEADER_LEN {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                let ty = u16::from_ne_bytes([data[4], data[5]]);
                let msg_seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                if len < HEADER_LEN || len > data.len() {
                    return Err(Errno::EBADMSG);
                }
                let body = &data[HEADER_LEN..len];
                data = &data[len.next_multiple_of(4).min(data.len())..];
                if msg_seq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        return if code < 0 {
                            Err(Errno::from_raw(-code))
                        } else {
                            Ok(())
                        };
                    }
                    _ => each(ty, body),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_round_trip() {
        let mut body = Body::new(&ifinfomsg(7, IFF_UP, IFF_UP));
        body.attr_str(IFLA_IFNAME, "sbxabc");
        let info = body.nest(IFLA_LINKINFO);
        body.attr_str(IFLA_INFO_KIND, "veth");
        body.end_nest(info);
        body.attr(IFLA_NET_NS_PID, &42u32.to_ne_bytes());
        assert_eq!(body.buf.len() % 4, 0);
        let found: Vec<(u16, Vec<u8>)> = attrs(&body.buf[16..]).map(|(t, p)| (t, p.to_vec())).collect();
        assert_eq!(found.len(), 3);
        assert_eq!(attr_string(&found[0].1), "sbxabc");
        assert_eq!(found[1].0, IFLA_LINKINFO);
        let inner: Vec<_> = attrs(&found[1].1).collect();
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].0, IFLA_INFO_KIND);
        assert_eq!(attr_string(inner[0].1), "veth");
        assert_eq!(found[2].1, 42u32.to_ne_bytes());
    }
}
