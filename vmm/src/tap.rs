//! The host end of `--net host`: a tap device (`IFF_TAP | IFF_NO_PI`, non-blocking) with an address
//! on a private /30 and the link up. The tap is not persistent, so the kernel removes it when the
//! VMM closes its fd, on every ending.

use sandbox_protocol::ifconfig::{netmask, sockaddr};
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::error::VmmError;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// An open tap device; closing it (drop) removes it.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// The error for a failed tap step: permission problems get their own remedy.
pub fn tap_error(name: &str, what: &str, err: std::io::Error) -> VmmError {
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => VmmError::TapPermission {
            name: name.to_string(),
        },
        _ => VmmError::Tap {
            name: name.to_string(),
            detail: format!("{what}: {err}"),
        },
    }
}

fn ifreq_for(name: &str) -> Result<libc::ifreq, VmmError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(VmmError::Tap {
            name: name.to_string(),
            detail: format!(
                "not a valid interface name (1 to {} characters, no '/' or spaces)",
                libc::IFNAMSIZ - 1
            ),
        });
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid (empty) request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

impl Tap {
    /// Creates tap `name`.
    pub fn create(name: &str) -> Result<Tap, VmmError> {
        let mut req = ifreq_for(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| tap_error(name, "opening /dev/net/tun", e))?;
        req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which lives for the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(tap_error(
                name,
                "creating the tap (TUNSETIFF)",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the host end `addr/prefix_len` and brings the link up.
    pub fn configure_host(&self, addr: Ipv4Addr, prefix_len: u8) -> Result<(), VmmError> {
        // SAFETY: plain socket(2); the fd is owned right after.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(tap_error(
                &self.name,
                "opening a control socket",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let ioctl = |request: libc::c_ulong, req: &mut libc::ifreq, what: &str| -> Result<(), VmmError> {
            // SAFETY: each SIOC* request reads/writes one ifreq, alive for the call.
            let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) };
            if rc < 0 {
                return Err(tap_error(&self.name, what, std::io::Error::last_os_error()));
            }
            Ok(())
        };
        let mut req = ifreq_for(&self.name)?;
        req.ifr_ifru.ifru_addr = sockaddr(addr);
        ioctl(libc::SIOCSIFADDR, &mut req, "setting the host address")?;
        let mut req = ifreq_for(&self.name)?;
        req.ifr_ifru.ifru_netmask = sockaddr(netmask(prefix_len));
        ioctl(libc::SIOCSIFNETMASK, &mut req, "setting the netmask")?;
        let mut req = ifreq_for(&self.name)?;
        ioctl(libc::SIOCGIFFLAGS, &mut req, "reading the link flags")?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short | libc::IFF_RUNNING as libc::c_short;
        ioctl(libc::SIOCSIFFLAGS, &mut req, "bringing the link up")
    }

    /// The tap's fd as a file for the net device (the tap lives as long as any copy).
    pub fn into_file(self) -> File {
        self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn netmask_from_prefix() {
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
    }

    #[test]
    fn bad_names_and_permission_errors_say_what_to_do() {
        assert!(Tap::create("").is_err());
        assert!(Tap::create("a-name-longer-than-15").is_err());
        let err = tap_error("sbxt1", "x", std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(matches!(err, VmmError::TapPermission { .. }));
        assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
    }

    /// Creates a real tap (this suite runs as root, like the VMM), checks the address and link,
    /// and that dropping it removes it.
    #[test]
    fn a_tap_gets_its_address_and_vanishes_when_closed() {
        let name = format!("sbxtest{}", std::process::id() % 100_000);
        let tap = Tap::create(&name).expect("creating a tap needs root or CAP_NET_ADMIN and /dev/net/tun");
        let sys = Path::new("/sys/class/net").join(&name);
        assert!(sys.exists());
        tap.configure_host(Ipv4Addr::new(172, 31, 254, 1), 30).unwrap();
        let flags = std::fs::read_to_string(sys.join("flags")).unwrap();
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
        assert_ne!(flags & libc::IFF_UP as u32, 0, "link up");
        // Read the address back the way it was set.
        // SAFETY: plain socket(2); closed below.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(sock >= 0);
        let mut req = ifreq_for(&name).unwrap();
        // SAFETY: SIOCGIFADDR fills one ifreq that lives for the call.
        let rc = unsafe { libc::ioctl(sock, libc::SIOCGIFADDR as _, &mut req) };
        // SAFETY: `sock` is ours.
        unsafe { libc::close(sock) };
        assert_eq!(rc, 0, "SIOCGIFADDR: {}", std::io::Error::last_os_error());
        // SAFETY: SIOCGIFADDR filled the address member with a sockaddr_in.
        let sin: libc::sockaddr_in = unsafe { std::mem::transmute(req.ifr_ifru.ifru_addr) };
        assert_eq!(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            Ipv4Addr::new(172, 31, 254, 1)
        );
        drop(tap);
        assert!(!sys.exists(), "tap removed on close");
    }
}
