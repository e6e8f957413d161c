//! Interface configuration inside the container's network namespace, done by the container's
//! first process before it drops CAP_NET_ADMIN: loopback up, and for `--net host` the address,
//! link state and default route of `eth0` (the veth peer the launcher moved in).
//!
//! Classic `SIOC*` ioctls on a datagram socket are enough for one IPv4 address and one route,
//! and need no netlink machinery in the child.

use nix::errno::Errno;
use sandbox_guest::protocol::NetPlan;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

/// `struct rtentry` from <net/route.h> (not in the libc crate).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn socket() -> Result<OwnedFd, Errno> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (arrays, integers, a union of those); all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *dst = src as libc::c_char;
    }
    req
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) on Linux; this is the
    // documented way to pass an IPv4 address through the generic type.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T) -> Result<(), Errno> {
    // SAFETY: every request used here takes a pointer to the struct type passed with it
    // (ifreq for SIOC[GS]IF*, rtentry for SIOCADDRT), which lives across the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, arg as *mut T) };
    Errno::result(rc).map(drop)
}

/// Sets IFF_UP on `name`.
fn link_up(sock: &OwnedFd, name: &str) -> Result<(), Errno> {
    let mut req = ifreq(name);
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req)
}

/// Brings up the loopback interface.
pub fn loopback_up() -> Result<(), (&'static str, Errno)> {
    let sock = socket().map_err(|e| ("opening a socket", e))?;
    link_up(&sock, "lo").map_err(|e| ("bringing up lo", e))
}

/// Gives the plan's interface its address and netmask, brings it up, and routes everything else
/// through the gateway.
pub fn configure(plan: &NetPlan) -> Result<(), (&'static str, Errno)> {
    let sock = socket().map_err(|e| ("opening a socket", e))?;
    let mut req = ifreq(&plan.interface);
    req.ifr_ifru.ifru_addr = sockaddr_in(plan.address);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req).map_err(|e| ("setting the address of eth0", e))?;
    let mask = if plan.prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(plan.prefix_len.min(32)))
    };
    let mut req = ifreq(&plan.interface);
    req.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut req).map_err(|e| ("setting the netmask of eth0", e))?;
    link_up(&sock, &plan.interface).map_err(|e| ("bringing up eth0", e))?;
    if let Some(gateway) = plan.gateway {
        let mut route = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr_in(gateway),
            rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: std::ptr::null_mut(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        ioctl(&sock, libc::SIOCADDRT, &mut route).map_err(|e| ("adding the default route", e))?;
    }
    Ok(())
}
