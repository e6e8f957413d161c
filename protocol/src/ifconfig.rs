//! Network set-up by ioctl, without tools in the image: loopback up, and for `--net` one
//! interface with a static IPv4 address and a default route via the host end of the link.

use crate::plan::NetPlan;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

/// Why the network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a socket for interface configuration: {0}")]
    Socket(nix::errno::Errno),
    #[error("interface name {0:?} is not valid (1-15 bytes, no NUL)")]
    BadName(String),
    #[error("network interface {0} does not exist: is the virtio-net device attached?")]
    NoInterface(String),
    #[error("{what} on {interface} failed: {source}")]
    Ioctl {
        what: &'static str,
        interface: String,
        source: io::Error,
    },
}

/// `struct rtentry` of <linux/route.h> (the libc crate has it only for musl).
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

/// An AF_INET datagram socket used only as the handle for interface ioctls.
struct Ctl(OwnedFd);

impl Ctl {
    fn open() -> Result<Ctl, NetError> {
        socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map(Ctl)
        .map_err(NetError::Socket)
    }

    /// Issues `request` with `arg`, naming `what` and `interface` on failure.
    fn ioctl<T>(
        &self,
        request: libc::c_ulong,
        arg: &mut T,
        what: &'static str,
        interface: &str,
    ) -> Result<(), NetError> {
        // SAFETY: every request used here (SIOC[GS]IF*, SIOCADDRT) reads or writes exactly the
        // structure type it is given (`ifreq` or `rtentry`), which `arg` points to and which
        // lives for the whole call.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), request as _, arg as *mut T) };
        if rc < 0 {
            return Err(NetError::Ioctl {
                what,
                interface: interface.into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// A zeroed `ifreq` naming `name`.
fn ifreq(name: &str) -> Result<libc::ifreq, NetError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(NetError::BadName(name.into()));
    }
    // SAFETY: ifreq is a plain C struct/union of integers and arrays; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// `addr` as a generic `sockaddr` (AF_INET, port 0), for the SIOC*IF* ioctls (also the VMM's tap).
pub fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16-byte plain C structs; the kernel reads an
    // AF_INET sockaddr exactly as this sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// The netmask of a prefix length (0-32): `30` → 255.255.255.252.
pub fn netmask(prefix_len: u8) -> Ipv4Addr {
    match prefix_len {
        0 => Ipv4Addr::UNSPECIFIED,
        p => Ipv4Addr::from(u32::MAX << (32 - u32::from(p.min(32)))),
    }
}

/// Sets IFF_UP on `name`.
fn set_up(ctl: &Ctl, name: &str) -> Result<(), NetError> {
    let mut req = ifreq(name)?;
    ctl.ioctl(
        libc::SIOCGIFFLAGS,
        &mut req,
        "reading the flags (SIOCGIFFLAGS)",
        name,
    )?;
    let wanted = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCGIFFLAGS filled the union's flags member, which is the one read and written.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        // Already up (a container launcher does it before dropping CAP_NET_ADMIN): nothing to ask for.
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | wanted;
    ctl.ioctl(
        libc::SIOCSIFFLAGS,
        &mut req,
        "bringing it up (SIOCSIFFLAGS)",
        name,
    )
}

/// Gives `name` the address `addr/prefix_len`.
fn set_address(ctl: &Ctl, name: &str, addr: Ipv4Addr, prefix_len: u8) -> Result<(), NetError> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    ctl.ioctl(
        libc::SIOCSIFADDR,
        &mut req,
        "setting the address (SIOCSIFADDR)",
        name,
    )?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr(netmask(prefix_len));
    ctl.ioctl(
        libc::SIOCSIFNETMASK,
        &mut req,
        "setting the netmask (SIOCSIFNETMASK)",
        name,
    )
}

/// Adds the default route via `gateway` on `name`; an existing one is kept.
fn add_default_route(ctl: &Ctl, name: &str, gateway: Ipv4Addr) -> Result<(), NetError> {
    let dev = CString::new(name).map_err(|_| NetError::BadName(name.into()))?;
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(gateway),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_ptr().cast_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    match ctl.ioctl(
        libc::SIOCADDRT,
        &mut route,
        "adding the default route (SIOCADDRT)",
        name,
    ) {
        Err(NetError::Ioctl { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Whether an interface called `name` exists.
fn exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// Whether `name` already has an IPv4 address.
fn has_ipv4(name: &str) -> bool {
    nix::ifaddrs::getifaddrs().is_ok_and(|mut all| {
        all.any(|ifa| ifa.interface_name == name && ifa.address.is_some_and(|a| a.as_sockaddr_in().is_some()))
    })
}

/// Brings up the loopback interface.
pub fn bring_up_loopback() -> Result<(), NetError> {
    set_up(&Ctl::open()?, "lo")
}

/// Configures `plan`'s interface. In a VM (`required`) it must exist; in a container the
/// launcher normally configured it already, so only an existing interface without an address
/// is configured.
pub fn configure(plan: &NetPlan, required: bool) -> Result<(), NetError> {
    let name = plan.interface.as_str();
    if !exists(name) {
        return if required {
            Err(NetError::NoInterface(name.into()))
        } else {
            Ok(())
        };
    }
    if !required && has_ipv4(name) {
        return Ok(());
    }
    let ctl = Ctl::open()?;
    set_address(&ctl, name, plan.address, plan.prefix_len)?;
    set_up(&ctl, name)?;
    if let Some(gateway) = plan.gateway {
        add_default_route(&ctl, name, gateway)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_from_prefix_lengths() {
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn rtentry_has_the_kernel_layout() {
        // x86_64 <linux/route.h>: 120 bytes.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert!(ifreq("a-name-that-is-too-long").is_err());
    }
}
