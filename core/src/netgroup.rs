//! How addresses group by network, for the anti-eclipse limits of
//! discovery's routing table and of the peer manager's gater: a [`Subnet`]
//! (IPv4 /24, IPv6 /56) and a [`NetGroup`] (IPv4 /16, IPv6 /56), with the
//! addresses neither limit applies to. Vocabulary both speak, so it lives
//! below them; it imports nothing from the crate.

use std::net::{IpAddr, Ipv6Addr};

/// The IPv4 /24 or IPv6 /56 an address is in: the per-bucket grouping.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Subnet {
    /// The first three octets.
    V4([u8; 3]),
    /// The first seven octets.
    V6([u8; 7]),
}

impl Subnet {
    /// The subnet of `ip` (IPv4-mapped addresses as IPv4).
    pub fn of(ip: IpAddr) -> Subnet {
        match ip.to_canonical() {
            IpAddr::V4(ip) => {
                let [a, b, c, _] = ip.octets();
                Subnet::V4([a, b, c])
            }
            IpAddr::V6(ip) => Subnet::V6(prefix56(ip)),
        }
    }
}

/// The IPv4 /16 or IPv6 /56 an address is in: the table-wide grouping.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum NetGroup {
    /// The first two octets.
    V4([u8; 2]),
    /// The first seven octets.
    V6([u8; 7]),
}

impl NetGroup {
    /// The network group of `ip` (IPv4-mapped addresses as IPv4).
    pub fn of(ip: IpAddr) -> NetGroup {
        match ip.to_canonical() {
            IpAddr::V4(ip) => {
                let [a, b, _, _] = ip.octets();
                NetGroup::V4([a, b])
            }
            IpAddr::V6(ip) => NetGroup::V6(prefix56(ip)),
        }
    }
}

fn prefix56(ip: Ipv6Addr) -> [u8; 7] {
    let octets = ip.octets();
    let mut prefix = [0u8; 7];
    prefix.copy_from_slice(&octets[..7]);
    prefix
}

/// Whether the anti-eclipse limits skip `ip`: loopback, private and
/// link-local addresses reach only this host or this site, so a Sybil from
/// afar cannot use them; they are dialled at all only under
/// `allow_private`, on a network its operator runs (a devnet, a cluster on
/// one /16), where a cap of a few peers per /16 would starve every node.
pub fn is_exempt_from_subnet_limits(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local(),
    }
}
