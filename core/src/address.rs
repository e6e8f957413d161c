//! Address allocation: which /30 a sandbox's network link gets — a container's veth pair or a
//! VM's tap, by one rule for both.
//!
//! Every link takes a /30 from the dedicated block 10.213.0.0/16 (16384 of them): the first
//! address for the host end, the second for the sandbox. The search starts at a slot derived from
//! the sandbox id (FNV-1a hash), so the same id gets the same addresses whenever that slot is
//! free, and walks on to the next slot while a slot is taken. A slot is taken when any host
//! address or route of prefix /16 or longer overlaps it; broader routes (a default route, a
//! 10.0.0.0/8 via a VPN) do not count, since the /30's own, more specific route wins for
//! host-to-sandbox traffic.

use crate::error::CoreError;
use sandbox_container::net;
use sandbox_protocol::NetPlan;
use std::net::Ipv4Addr;

/// How often a /30 is retried after losing a race with another sandbox for it.
const CLAIM_ATTEMPTS: usize = 8;

/// The block every sandbox /30 comes from.
pub(crate) const BLOCK: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 0);
pub(crate) const BLOCK_PREFIX: u8 = 16;
/// Each link's prefix length.
pub(crate) const LINK_PREFIX: u8 = 30;
/// How many /30s the block holds.
pub(crate) const SLOTS: u32 = 1 << (LINK_PREFIX - BLOCK_PREFIX);

/// A network in use on the host: an address's or a route's network and prefix length.
pub(crate) type Network = (Ipv4Addr, u8);

/// The slot an id's search starts at.
pub(crate) fn preferred_slot(id: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(SLOTS)) as u32
}

/// Slot `slot`'s `(host, guest)` addresses.
pub(crate) fn addresses(slot: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(BLOCK) + (slot % SLOTS) * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// Whether two networks share any address.
pub(crate) fn overlaps(a: Network, b: Network) -> bool {
    let m = mask(a.1.min(b.1));
    u32::from(a.0) & m == u32::from(b.0) & m
}

/// Whether `slot` is free given the networks in use.
pub(crate) fn is_free(slot: u32, used: &[Network]) -> bool {
    let (host, _) = addresses(slot);
    used.iter()
        .filter(|n| n.1 >= BLOCK_PREFIX)
        .all(|&n| !overlaps((host, LINK_PREFIX), n))
}

/// The first free slot from `id`'s preferred one on, skipping `skip`.
pub(crate) fn choose(id: &str, used: &[Network], skip: &[u32]) -> Option<u32> {
    let start = preferred_slot(id);
    (0..SLOTS)
        .map(|i| (start + i) % SLOTS)
        .find(|s| !skip.contains(s) && is_free(*s, used))
}

/// Gives host interface `name` (a veth's host end, or a tap) the host address of a free /30,
/// marks it as sandbox `id`'s and brings it up; returns the guest side's [`NetPlan`]
/// (`interface` is the name the guest sees). Two sandboxes started at once may pick the same
/// /30; each then sees the other's address, and the one with the higher interface index moves
/// on to the next.
pub fn claim(id: &str, name: &str, guest_interface: &str) -> Result<NetPlan, CoreError> {
    let index = net::index_of(name)?;
    let mut lost = Vec::new();
    for _ in 0..CLAIM_ATTEMPTS {
        let table = net::address_table()?;
        let used: Vec<Network> = table
            .addresses
            .iter()
            .map(|&(_, a, p)| (a, p))
            .chain(table.routes.iter().copied())
            .collect();
        let slot = choose(id, &used, &lost).ok_or(CoreError::NoFreeSubnet {
            block: format!("{BLOCK}/{BLOCK_PREFIX}"),
        })?;
        let (host, guest) = addresses(slot);
        net::add_address(index, host, LINK_PREFIX)?;
        let rival = net::address_table()?
            .addresses
            .into_iter()
            .any(|(other, addr, prefix)| {
                other < index && overlaps((host, LINK_PREFIX), (addr, prefix)) && prefix >= BLOCK_PREFIX
            });
        if !rival {
            net::mark_and_bring_up(index, id, name)?;
            return Ok(NetPlan {
                interface: guest_interface.to_string(),
                address: guest,
                prefix_len: LINK_PREFIX,
                gateway: Some(host),
            });
        }
        net::remove_address(index, host, LINK_PREFIX)?;
        lost.push(slot);
    }
    Err(CoreError::NoFreeSubnet {
        block: format!("{BLOCK}/{BLOCK_PREFIX}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_30s_inside_the_block() {
        assert_eq!(
            addresses(0),
            (Ipv4Addr::new(10, 213, 0, 1), Ipv4Addr::new(10, 213, 0, 2))
        );
        assert_eq!(
            addresses(SLOTS - 1),
            (Ipv4Addr::new(10, 213, 255, 253), Ipv4Addr::new(10, 213, 255, 254))
        );
        assert_eq!(
            addresses(65),
            (Ipv4Addr::new(10, 213, 1, 5), Ipv4Addr::new(10, 213, 1, 6))
        );
    }

    #[test]
    fn the_same_id_gets_the_same_slot_and_taken_slots_are_skipped() {
        let slot = choose("abc", &[], &[]).unwrap();
        assert_eq!(slot, preferred_slot("abc"));
        assert_eq!(choose("abc", &[], &[]), Some(slot));
        let (host, _) = addresses(slot);
        // The host address itself and a /32 route to the guest address take the slot.
        for used in [(host, 32), (addresses(slot).1, 32)] {
            assert_eq!(choose("abc", &[used], &[]), Some((slot + 1) % SLOTS), "{used:?}");
        }
        // A /24 around it takes all 64 of its slots: the search resumes after it.
        let net24 = (Ipv4Addr::from(u32::from(host) & 0xffff_ff00), 24);
        let next = choose("abc", &[net24], &[]).unwrap();
        assert!(!overlaps((addresses(next).0, LINK_PREFIX), net24));
        assert_eq!(u32::from(addresses(next).0), u32::from(net24.0) + 256 + 1);
        assert_eq!(choose("abc", &[], &[slot]), Some((slot + 1) % SLOTS));
    }

    #[test]
    fn broad_routes_do_not_take_slots() {
        let used = [
            (Ipv4Addr::UNSPECIFIED, 0),
            (Ipv4Addr::new(10, 0, 0, 0), 8),
            (Ipv4Addr::new(192, 0, 2, 0), 24),
        ];
        assert_eq!(choose("abc", &used, &[]), Some(preferred_slot("abc")));
        let whole_block = [(BLOCK, BLOCK_PREFIX)];
        assert_eq!(choose("abc", &whole_block, &[]), None);
    }
}
