//! The runtime core's address allocator gives a VM's tap its /30 (the same allocator, and block,
//! as container veths): a real tap (this suite runs as root, like the VMM) claimed with
//! `sandbox_core::address::claim`, as `run --mode vm --net host` does.

use std::net::Ipv4Addr;
use std::path::Path;

use sandbox_vmm::tap::Tap;

#[test]
fn a_tap_gets_a_30_from_the_container_block_and_vanishes_when_closed() {
    let id = format!("{:08x}", std::process::id().wrapping_mul(2_654_435_761));
    let name = format!("{}{id}", sandbox_core::vm::TAP_PREFIX);
    let tap = Tap::create(&name).expect("creating a tap needs root or CAP_NET_ADMIN and /dev/net/tun");
    let plan = sandbox_core::address::claim(&id, &name, "eth0").unwrap();
    let host = plan.gateway.expect("the host end is the gateway");
    assert_eq!(plan.prefix_len, 30);
    assert_eq!(plan.interface, "eth0");
    assert_eq!(u32::from(plan.address), u32::from(host) + 1, "{plan:?}");
    assert_eq!(u32::from(host) & 3, 1, "the first address of a /30: {host}");
    assert_eq!(host.octets()[..2], Ipv4Addr::new(10, 213, 0, 0).octets()[..2]);
    let sys = Path::new("/sys/class/net").join(&name);
    let flags = std::fs::read_to_string(sys.join("flags")).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_ne!(flags & libc::IFF_UP as u32, 0, "link up");
    drop(tap);
    assert!(
        !sys.exists(),
        "the tap (and its address) went with its descriptor"
    );
}
