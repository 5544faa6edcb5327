//! Which addresses discovery accepts, and how it groups them by network
//! for the anti-eclipse limits.
//!
//! # Design
//! A record names addresses its signer says it listens on; nothing proves
//! them. The policy refuses what is never dialable on the internet (port 0,
//! unspecified, multicast, broadcast) and, unless the configuration allows
//! private networks (local devnets, labs), what only reaches this host or
//! this site: loopback, private (RFC 1918, IPv6 unique local) and link-local.
//! IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
//!
//! Addresses are grouped twice: a [`Subnet`] (IPv4 /24, IPv6 /56) bounds
//! entries per bucket, a [`NetGroup`] (IPv4 /16, IPv6 /56) entries in the
//! whole table and candidates, as `limits.rs` explains.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an address was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AddressRefusal {
    /// Port 0 cannot be dialled.
    PortZero,
    /// Unspecified, multicast or broadcast: never a peer's address.
    NotUnicast,
    /// Loopback, private or link-local, while the configuration does not allow them.
    Private,
}

/// Whether discovery may dial `addr`: `Ok` if it may.
pub fn check_address(addr: &SocketAddr, allow_private: bool) -> Result<(), AddressRefusal> {
    if addr.port() == 0 {
        return Err(AddressRefusal::PortZero);
    }
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => check_ipv4(ip, allow_private),
        IpAddr::V6(ip) => check_ipv6(ip, allow_private),
    }
}

fn check_ipv4(ip: Ipv4Addr, allow_private: bool) -> Result<(), AddressRefusal> {
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(AddressRefusal::NotUnicast);
    }
    if !allow_private && (ip.is_loopback() || ip.is_private() || ip.is_link_local()) {
        return Err(AddressRefusal::Private);
    }
    Ok(())
}

fn check_ipv6(ip: Ipv6Addr, allow_private: bool) -> Result<(), AddressRefusal> {
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(AddressRefusal::NotUnicast);
    }
    if !allow_private && (ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local()) {
        return Err(AddressRefusal::Private);
    }
    Ok(())
}

/// The first address of `addresses` the policy accepts.
pub fn first_dialable(addresses: &[SocketAddr], allow_private: bool) -> Option<SocketAddr> {
    addresses
        .iter()
        .copied()
        .find(|addr| check_address(addr, allow_private).is_ok())
}

pub use crate::netgroup::{is_exempt_from_subnet_limits, NetGroup, Subnet};

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        for text in [
            "127.0.0.1:9000",
            "10.1.2.3:9000",
            "172.16.0.1:9000",
            "192.168.1.1:9000",
            "169.254.1.1:9000",
            "[::1]:9000",
            "[fd00::1]:9000",
            "[fe80::1]:9000",
            "[::ffff:10.0.0.1]:9000",
        ] {
            assert_eq!(
                check_address(&addr(text), false),
                Err(AddressRefusal::Private),
                "{text}"
            );
            assert_eq!(check_address(&addr(text), true), Ok(()), "{text}");
        }
    }

    #[test]
    fn undialable_addresses_are_always_refused() {
        for (text, refusal) in [
            ("203.0.113.1:0", AddressRefusal::PortZero),
            ("127.0.0.1:0", AddressRefusal::PortZero),
            ("0.0.0.0:9000", AddressRefusal::NotUnicast),
            ("[::]:9000", AddressRefusal::NotUnicast),
            ("224.0.0.1:9000", AddressRefusal::NotUnicast),
            ("255.255.255.255:9000", AddressRefusal::NotUnicast),
            ("[ff02::1]:9000", AddressRefusal::NotUnicast),
        ] {
            assert_eq!(check_address(&addr(text), true), Err(refusal), "{text}");
            assert_eq!(check_address(&addr(text), false), Err(refusal), "{text}");
        }
        assert_eq!(check_address(&addr("203.0.113.1:9000"), false), Ok(()));
        assert_eq!(check_address(&addr("[2001:db8::1]:9000"), false), Ok(()));
    }

    #[test]
    fn subnets_and_groups_fold_the_right_bits() {
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.200".parse().unwrap();
        let c: IpAddr = "203.0.114.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(Subnet::of(a), Subnet::of(b));
        assert_ne!(Subnet::of(a), Subnet::of(c));
        assert_eq!(NetGroup::of(a), NetGroup::of(c));
        assert_eq!(Subnet::of(mapped), Subnet::of(a));
        let v6a: IpAddr = "2001:db8:1:2300::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:23ff::1".parse().unwrap();
        let v6c: IpAddr = "2001:db8:1:2400::1".parse().unwrap();
        assert_eq!(Subnet::of(v6a), Subnet::of(v6b));
        assert_ne!(Subnet::of(v6a), Subnet::of(v6c));
    }
}
