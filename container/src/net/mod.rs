//! The host side of `--net host`: a veth pair whose host end `sbx<id>` carries the first address
//! of a private /30 and whose other end is created directly in the sandbox's network namespace
//! as `eth0`. Which /30 is the runtime core's choice (its address allocator, shared with VM
//! mode's taps); this module makes the links and answers the netlink questions and requests the
//! allocator needs ([`address_table`], [`add_address`], [`remove_address`]). The container's
//! first process configures `eth0` from [`HostLink::guest_plan`], with the host end as gateway.
//! No NAT: host and sandbox reach each other, nothing else.
//!
//! The host end's name is `sbx<id>` when that fits the 15-character limit, else `sbx` and 12 hex
//! digits of a hash of the id; its alias (`ip link` shows it) is always `sandbox:<id>`, which is
//! how [`list_ids`] and [`remove_stale`] recognise sandbox links. [`HostLink`] owns the pair:
//! dropping it deletes the host end, which deletes both.

mod netlink;

use netlink::{Body, Socket};
use nix::errno::Errno;
use nix::unistd::Pid;
use sandbox_protocol::NetPlan;
use std::net::Ipv4Addr;

/// The name of the sandbox end of the pair.
pub const GUEST_INTERFACE: &str = "eth0";
/// The prefix of every host-end interface name.
pub const HOST_PREFIX: &str = "sbx";
/// The prefix of the alias that marks a link as a sandbox's and names the sandbox.
const ALIAS_PREFIX: &str = "sandbox:";
/// The kernel's limit on interface names (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// Errors setting up or removing a sandbox's veth pair.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid sandbox id {id:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '-'")]
    BadId { id: String },
    #[error("{op} needs CAP_NET_ADMIN: run sandbox as root, or run without --net host")]
    Permission { op: String },
    #[error(
        "network interface {name} already exists: a sandbox with id {id} is running or was left \
         behind; run `sandbox gc`"
    )]
    Exists { name: String, id: String },
    #[error("process {pid} is gone: the sandbox exited before its network was set up")]
    ChildGone { pid: i32 },
    #[error("{op} failed: {errno}{}", hint(*.errno))]
    Netlink { op: String, errno: Errno },
}

fn hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EOPNOTSUPP => " (the kernel lacks veth support: load it with `modprobe veth`)",
        _ => "",
    }
}

/// Maps a netlink error to the error a user can act on.
fn fail(op: impl Into<String>, errno: Errno) -> NetError {
    let op = op.into();
    match errno {
        Errno::EPERM | Errno::EACCES => NetError::Permission { op },
        _ => NetError::Netlink { op, errno },
    }
}

fn open() -> Result<Socket, NetError> {
    Socket::open().map_err(|e| fail("opening a netlink socket", e))
}

fn validate_id(id: &str) -> Result<(), NetError> {
    if crate::id::is_valid(id) {
        Ok(())
    } else {
        Err(NetError::BadId { id: id.to_string() })
    }
}

/// The host end's interface name for sandbox `id`.
pub fn host_name_for(id: &str) -> String {
    let name = format!("{HOST_PREFIX}{id}");
    if name.len() <= IFNAME_MAX {
        return name;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{HOST_PREFIX}{:012x}", hash & 0xffff_ffff_ffff)
}

/// The host end of a sandbox's veth pair. Dropping it deletes the pair.
#[derive(Debug)]
pub struct HostLink {
    id: String,
    name: String,
    index: u32,
    host: Ipv4Addr,
    guest: Ipv4Addr,
    prefix_len: u8,
    deleted: bool,
}

impl HostLink {
    /// The host end's interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Records the addresses the runtime core's allocator gave the link (it assigned the host
    /// end's and brought the link up).
    pub fn set_addresses(&mut self, host: Ipv4Addr, guest: Ipv4Addr, prefix_len: u8) {
        self.host = host;
        self.guest = guest;
        self.prefix_len = prefix_len;
    }

    /// What the guest program needs to configure its end.
    pub fn guest_plan(&self) -> NetPlan {
        NetPlan {
            interface: GUEST_INTERFACE.to_string(),
            address: self.guest,
            prefix_len: self.prefix_len,
            gateway: Some(self.host),
        }
    }

    /// The host end's address: the sandbox reaches the host here.
    pub fn host_address(&self) -> Ipv4Addr {
        self.host
    }

    /// The host end's interface name.
    pub fn host_name(&self) -> &str {
        &self.name
    }

    /// The sandbox id the link belongs to.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Deletes the pair now, reporting failure (dropping does the same, silently).
    pub fn remove(mut self) -> Result<(), NetError> {
        self.deleted = true;
        delete_by_name(&self.name)
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        if !self.deleted {
            if let Err(e) = delete_by_name(&self.name) {
                eprintln!(
                    "warning: removing network link {} of sandbox {}: {e}",
                    self.name, self.id
                );
            }
        }
    }
}

/// Creates the veth pair for sandbox `id`: `sbx<id>` on the host (down, without an address yet:
/// the runtime core's allocator gives it one), `eth0` in the network namespace of process
/// `child`. On failure nothing is left.
pub fn create_veth(id: &str, child: Pid) -> Result<HostLink, NetError> {
    validate_id(id)?;
    let name = host_name_for(id);
    let mut sock = open()?;

    let mut body = Body::new(&netlink::ifinfomsg(0, 0, 0));
    body.attr_str(netlink::IFLA_IFNAME, &name);
    let info = body.nest(netlink::IFLA_LINKINFO);
    body.attr_str(netlink::IFLA_INFO_KIND, "veth");
    let data = body.nest(netlink::IFLA_INFO_DATA);
    let peer = body.nest(netlink::VETH_INFO_PEER);
    body.raw(&netlink::ifinfomsg(0, 0, 0));
    body.attr_str(netlink::IFLA_IFNAME, GUEST_INTERFACE);
    body.attr(netlink::IFLA_NET_NS_PID, &(child.as_raw() as u32).to_ne_bytes());
    body.end_nest(peer);
    body.end_nest(data);
    body.end_nest(info);
    let flags = netlink::NLM_F_CREATE | netlink::NLM_F_EXCL;
    match sock.request(netlink::RTM_NEWLINK, flags, &body) {
        Ok(()) => {}
        Err(Errno::EEXIST) if nix::net::if_::if_nametoindex(name.as_str()).is_ok() => {
            return Err(NetError::Exists {
                name,
                id: id.to_string(),
            })
        }
        Err(Errno::EEXIST) => {
            return Err(fail(
                format!("creating {GUEST_INTERFACE} in the network namespace of process {child}"),
                Errno::EEXIST,
            ))
        }
        Err(Errno::ESRCH) => return Err(NetError::ChildGone { pid: child.as_raw() }),
        Err(e) => {
            return Err(fail(
                format!("creating veth pair {name} (peer {GUEST_INTERFACE})"),
                e,
            ))
        }
    }
    // From here on, dropping the link deletes the pair.
    let mut link = HostLink {
        id: id.to_string(),
        name,
        index: 0,
        host: Ipv4Addr::UNSPECIFIED,
        guest: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
        deleted: false,
    };
    link.index = index_of(&link.name)?;
    Ok(link)
}

/// The index of host interface `name`.
pub fn index_of(name: &str) -> Result<u32, NetError> {
    nix::net::if_::if_nametoindex(name).map_err(|e| fail(format!("looking up interface {name}"), e))
}

/// The host's IPv4 addresses (with their interface) and route destinations, all tables.
#[derive(Debug, Clone, Default)]
pub struct AddressTable {
    /// `(interface index, address, prefix length)`.
    pub addresses: Vec<(u32, Ipv4Addr, u8)>,
    /// `(destination, prefix length)`.
    pub routes: Vec<(Ipv4Addr, u8)>,
}

/// Reads the host's [`AddressTable`].
pub fn address_table() -> Result<AddressTable, NetError> {
    let mut sock = open()?;
    Ok(AddressTable {
        addresses: host_addresses(&mut sock)?,
        routes: host_routes(&mut sock)?,
    })
}

/// Gives interface `index` the address `address/prefix_len`; an address someone else already
/// claimed on it answers EEXIST.
pub fn add_address(index: u32, address: Ipv4Addr, prefix_len: u8) -> Result<(), NetError> {
    let body = address_body(index, address, prefix_len);
    let flags = netlink::NLM_F_CREATE | netlink::NLM_F_EXCL;
    open()?.request(netlink::RTM_NEWADDR, flags, &body).map_err(|e| {
        fail(
            format!("adding address {address}/{prefix_len} to a sandbox link"),
            e,
        )
    })
}

/// Takes `address/prefix_len` off interface `index`.
pub fn remove_address(index: u32, address: Ipv4Addr, prefix_len: u8) -> Result<(), NetError> {
    let body = address_body(index, address, prefix_len);
    open()?
        .request(netlink::RTM_DELADDR, 0, &body)
        .map_err(|e| fail(format!("removing contested address {address}"), e))
}

/// Marks interface `index` as sandbox `id`'s (its alias) and brings it up.
pub fn mark_and_bring_up(index: u32, id: &str, name: &str) -> Result<(), NetError> {
    let mut body = Body::new(&netlink::ifinfomsg(
        index as i32,
        netlink::IFF_UP,
        netlink::IFF_UP,
    ));
    body.attr_str(netlink::IFLA_IFALIAS, &format!("{ALIAS_PREFIX}{id}"));
    open()?
        .request(netlink::RTM_NEWLINK, 0, &body)
        .map_err(|e| fail(format!("bringing up {name}"), e))
}

fn address_body(index: u32, address: Ipv4Addr, prefix_len: u8) -> Body {
    let mut body = Body::new(&netlink::ifaddrmsg(prefix_len, index));
    body.attr(netlink::IFA_LOCAL, &address.octets());
    body.attr(netlink::IFA_ADDRESS, &address.octets());
    body
}

/// Every IPv4 address on the host: `(interface index, (address, prefix length))`.
fn host_addresses(sock: &mut Socket) -> Result<Vec<(u32, Ipv4Addr, u8)>, NetError> {
    let replies = sock
        .dump(netlink::RTM_GETADDR, &Body::new(&netlink::ifaddrmsg(0, 0)))
        .map_err(|e| fail("listing host addresses", e))?;
    Ok(replies
        .iter()
        .filter(|(ty, body)| *ty == netlink::RTM_NEWADDR && body.len() >= 8 && body[0] == netlink::AF_INET)
        .filter_map(|(_, body)| {
            let prefix = body[1];
            let index = u32::from_ne_bytes([body[4], body[5], body[6], body[7]]);
            netlink::attrs(&body[8..])
                .filter(|(ty, _)| *ty == netlink::IFA_LOCAL || *ty == netlink::IFA_ADDRESS)
                .find_map(|(_, p)| <[u8; 4]>::try_from(p).ok())
                .map(|a| (index, Ipv4Addr::from(a), prefix))
        })
        .collect())
}

/// Every IPv4 route destination on the host, in all tables.
fn host_routes(sock: &mut Socket) -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
    let replies = sock
        .dump(netlink::RTM_GETROUTE, &Body::new(&netlink::rtmsg()))
        .map_err(|e| fail("listing host routes", e))?;
    Ok(replies
        .iter()
        .filter(|(_, body)| body.len() >= 12 && body[0] == netlink::AF_INET)
        .map(|(_, body)| {
            let dst = netlink::attrs(&body[12..])
                .find(|(ty, _)| *ty == netlink::RTA_DST)
                .and_then(|(_, p)| <[u8; 4]>::try_from(p).ok())
                .map(Ipv4Addr::from)
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            (dst, body[1])
        })
        .collect())
}

/// A veth link on the host whose name starts with [`HOST_PREFIX`].
struct SandboxLink {
    name: String,
    alias: Option<String>,
}

fn sandbox_links(sock: &mut Socket) -> Result<Vec<SandboxLink>, NetError> {
    let replies = sock
        .dump(netlink::RTM_GETLINK, &Body::new(&netlink::ifinfomsg(0, 0, 0)))
        .map_err(|e| fail("listing network links", e))?;
    let mut links = Vec::new();
    for (ty, body) in &replies {
        if *ty != netlink::RTM_NEWLINK || body.len() < 16 {
            continue;
        }
        let (mut name, mut alias, mut veth) = (None, None, false);
        for (attr, payload) in netlink::attrs(&body[16..]) {
            match attr {
                netlink::IFLA_IFNAME => name = Some(netlink::attr_string(payload)),
                netlink::IFLA_IFALIAS => alias = Some(netlink::attr_string(payload)),
                netlink::IFLA_LINKINFO => {
                    veth = netlink::attrs(payload)
                        .any(|(t, p)| t == netlink::IFLA_INFO_KIND && netlink::attr_string(p) == "veth")
                }
                _ => {}
            }
        }
        if let Some(name) = name.filter(|n| veth && n.starts_with(HOST_PREFIX)) {
            links.push(SandboxLink { name, alias });
        }
    }
    Ok(links)
}

impl SandboxLink {
    /// The sandbox id: from the alias, else (a link whose set-up was cut short) from the name.
    fn id(&self) -> Option<String> {
        match self.alias.as_deref().and_then(|a| a.strip_prefix(ALIAS_PREFIX)) {
            Some(id) => Some(id.to_string()),
            None => self.name.strip_prefix(HOST_PREFIX).map(str::to_string),
        }
    }
}

fn delete_by_name(name: &str) -> Result<(), NetError> {
    let mut sock = open()?;
    let mut body = Body::new(&netlink::ifinfomsg(0, 0, 0));
    body.attr_str(netlink::IFLA_IFNAME, name);
    match sock.request(netlink::RTM_DELLINK, 0, &body) {
        // Already gone: the sandbox's namespace died and took the pair with it.
        Ok(()) | Err(Errno::ENODEV) => Ok(()),
        Err(e) => Err(fail(format!("deleting network link {name}"), e)),
    }
}

/// Deletes sandbox `id`'s veth pair if it exists (for `sandbox gc`).
pub fn remove_stale(id: &str) -> Result<(), NetError> {
    validate_id(id)?;
    let mut sock = open()?;
    let expected = host_name_for(id);
    for link in sandbox_links(&mut sock)? {
        if link.name == expected || link.id().as_deref() == Some(id) {
            delete_by_name(&link.name)?;
        }
    }
    Ok(())
}

/// The ids of the sandboxes that have a veth pair on the host, sorted.
pub fn list_ids() -> Vec<String> {
    let Ok(mut sock) = open() else {
        return Vec::new();
    };
    let mut ids: Vec<String> = sandbox_links(&mut sock)
        .unwrap_or_default()
        .iter()
        .filter_map(SandboxLink::id)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_fit_the_kernel_limit() {
        assert_eq!(host_name_for("abc123"), "sbxabc123");
        assert_eq!(host_name_for("123456789012"), "sbx123456789012");
        let long = host_name_for("1234567890123");
        assert_eq!(long.len(), IFNAME_MAX);
        assert!(long.starts_with(HOST_PREFIX));
        assert_ne!(long, host_name_for("1234567890124"));
    }

    #[test]
    fn link_ids_come_from_the_alias_else_the_name() {
        let aliased = SandboxLink {
            name: "sbx0123456789ab".into(),
            alias: Some("sandbox:a-very-long-sandbox-id".into()),
        };
        assert_eq!(aliased.id().as_deref(), Some("a-very-long-sandbox-id"));
        let bare = SandboxLink {
            name: "sbxabc".into(),
            alias: None,
        };
        assert_eq!(bare.id().as_deref(), Some("abc"));
    }
}
